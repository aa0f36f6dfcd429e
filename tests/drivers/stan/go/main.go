// Command interop speaks Go hexa-event's hestan wire format with the stan.go version hestan
// pins (v0.7.0), for the Python STAN driver's interop tests.
//
// hestan's emitter publishes json.Marshal(hevent.RawMessage) synchronously to subject =
// channel; its receiver subscribes (plain, queue, durable or durable queue) and hands the
// body's RawMessage to the handler. github.com/kamva/hexa-event itself is not served by the
// Go module proxy, so RawMessage is declared here exactly as hevent declares it.
//
//	interop emit    -channel C -n N [-correlation ID]
//	interop receive -channel C [-n N] [-group G -durable D] [-for SECONDS]
//
// receive prints "ready" once subscribed, then one JSON line per message, and acks each.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	stan "github.com/nats-io/stan.go"
)

// RawMessage is hevent.RawMessage: headers and payload, []byte as base64 in JSON.
type RawMessage struct {
	Headers map[string][]byte `json:"header,omitempty"`
	Payload []byte            `json:"payload"`
}

type line struct {
	Headers  map[string]string `json:"headers"`
	Payload  string            `json:"payload"`
	Sequence uint64            `json:"sequence"`
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) < 2 {
		check(fmt.Errorf("usage: interop emit|receive [flags]"))
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	url := fs.String("url", "nats://127.0.0.1:4223", "NATS URL of the streaming server")
	cluster := fs.String("cluster", "hexa-event", "cluster id")
	channel := fs.String("channel", "", "channel")
	n := fs.Int("n", 0, "messages to emit, or to receive before exiting")
	group := fs.String("group", "", "queue group")
	durable := fs.String("durable", "", "durable name")
	correlation := fs.String("correlation", "go-corr", "correlation id to send")
	seconds := fs.Int("for", 60, "receive for at most this many seconds")
	check(fs.Parse(os.Args[2:]))

	clientID := fmt.Sprintf("go-interop-%d", time.Now().UnixNano())
	sc, err := stan.Connect(*cluster, clientID, stan.NatsURL(*url))
	check(err)
	defer sc.Close()

	switch mode {
	case "emit":
		for i := 0; i < *n; i++ {
			payload, err := json.Marshal(map[string]interface{}{"i": i, "from": "go"})
			check(err)
			body, err := json.Marshal(RawMessage{
				Headers: map[string][]byte{
					"_ctx_correlation_id": []byte(*correlation),
					"_ctx_locale":         []byte("fa-IR"),
					"_reply_channel":      []byte("go-replies"),
					"_payload_encoder":    []byte("json"),
				},
				Payload: payload,
			})
			check(err)
			check(sc.Publish(*channel, body)) // synchronous, as hestan's emitter
		}
		fmt.Printf("{\"emitted\": %d}\n", *n)
	case "receive":
		lines := make(chan line, 1024)
		handler := func(m *stan.Msg) {
			var raw RawMessage
			if err := json.Unmarshal(m.Data, &raw); err != nil {
				fmt.Fprintln(os.Stderr, "interop: not a RawMessage:", err)
				return
			}
			headers := map[string]string{}
			for k, v := range raw.Headers {
				headers[k] = string(v)
			}
			check(m.Ack())
			lines <- line{Headers: headers, Payload: string(raw.Payload), Sequence: m.Sequence}
		}
		opts := []stan.SubscriptionOption{
			stan.SetManualAckMode(), stan.AckWait(30 * time.Second), stan.DeliverAllAvailable(),
		}
		if *durable != "" {
			opts = append(opts, stan.DurableName(*durable))
		}
		var sub stan.Subscription
		if *group != "" {
			sub, err = sc.QueueSubscribe(*channel, *group, handler, opts...)
		} else {
			sub, err = sc.Subscribe(*channel, handler, opts...)
		}
		check(err)
		fmt.Println("ready")
		deadline := time.After(time.Duration(*seconds) * time.Second)
		got := 0
	loop:
		for *n == 0 || got < *n {
			select {
			case l := <-lines:
				out, err := json.Marshal(l)
				check(err)
				fmt.Println(string(out))
				got++
			case <-deadline:
				break loop
			}
		}
		check(sub.Close()) // hestan closes, never unsubscribes: durables survive
	default:
		check(fmt.Errorf("unknown mode %q", mode))
	}
}
