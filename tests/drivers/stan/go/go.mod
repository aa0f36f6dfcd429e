module github.com/hexa-event-python/stan-interop

go 1.22

require github.com/nats-io/stan.go v0.7.0

require (
	github.com/gogo/protobuf v1.3.1 // indirect
	github.com/nats-io/jwt v0.3.2 // indirect
	github.com/nats-io/nats.go v1.10.0 // indirect
	github.com/nats-io/nkeys v0.1.4 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.0.0-20200323165209-0ec3e9974c59 // indirect
)
