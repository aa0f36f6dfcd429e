// Command interop speaks Go hexa-event's Kafka wire format (hafka, sarama v1.27.2) so the
// Python driver can be checked against it.
//
// github.com/kamva/hexa-event itself is not served by the Go module proxy reachable here
// (it answers 403 "This module version is not available" for every version, and so for
// github.com/kamva/hexa), so this program reproduces what hafka does on the wire with the
// same sarama version hafka pins: the default HashPartitioner, the record key/value/headers
// of hafka's emitter (_ctx_correlation_id, _ctx_locale, _ctx_user, _reply_channel,
// _payload_encoder with "json" or "protobuf" = protojson), hafka's dedup ids
// (<topic>-<partition>-<offset>, HEXA_ROOT_* headers added before forwarding) and its retry
// chain (<action>.retry.<n>, then <action>.dlq, retry number parsed from the topic).
//
// Usage:
//
//	interop vectors                       print sarama partitions for keys read from stdin
//	interop emit -brokers B -topic T -n N -encoder json|protobuf [-fail-every K]
//	interop consume -brokers B -topic T -action A -n N [-retries R] [-fail-keys k1,k2]
//	        [-fail-all] [-retry-topic BASE] [-only t1,t2] [-initial 100ms] [-idle 5s]
//	        [-handle-for 1ms] [-retention 24h] [-reply]
//
// consume behaves like a hafka receiver: a sarama consumer group named after the action
// with sarama's default eager range assignment, offsets marked after each record whatever
// the outcome and committed (OffsetCommit v2 thanks to -retention), records of retry topics
// handled after timestamp + back-off, failures forwarded to the next retry topic with every
// header copied (the retry number from the topic, never from a header). It prints one JSON
// line per handled record (its four dedup keys) and one per session setup/cleanup. With
// -reply, a handled record that names a ReplyChannel (_reply_channel) is answered the way a
// hafka handler answers: it emits an event to that channel with the handler's context (the
// request's _ctx_* headers, so its correlation id), an empty reply channel and the json
// encoder; the payload is {"id": <request payload id>, "answered_by": "go"}.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	hdrCorrelation = "_ctx_correlation_id"
	hdrLocale      = "_ctx_locale"
	hdrUser        = "_ctx_user"
	hdrReply       = "_reply_channel"
	hdrEncoder     = "_payload_encoder"
	hdrRootID      = "HEXA_ROOT_EVENT_ID"
	hdrRootAction  = "HEXA_ROOT_EVENT_HANDLER_ACTION_NAME"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "interop:", err)
	os.Exit(1)
}

// config is hafka's NewConfig: sarama defaults (eager range assignment for consumer groups),
// OffsetOldest. retention > 0 sets sarama's offset retention, which makes sarama send
// OffsetCommit v2: Kafka 4.x rejects the v1 sarama sends by default, so without it a Go
// consumer commits nothing there.
func config(retention time.Duration) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_1_0_0
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Group.Rebalance.Strategy = sarama.BalanceStrategyRange
	cfg.Consumer.Offsets.Retention = retention
	return cfg
}

// vectors: for each stdin line "<partitions> <key>", print sarama's partition.
func vectors() {
	p := sarama.NewHashPartitioner("t")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		line := in.Text()
		parts := strings.SplitN(line, " ", 2)
		if len(parts) != 2 {
			continue
		}
		n, err := strconv.Atoi(parts[0])
		if err != nil {
			fail(err)
		}
		part, err := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(parts[1])}, int32(n))
		if err != nil {
			fail(err)
		}
		fmt.Printf("%d %d %s\n", n, part, parts[1])
	}
}

func userJSON(id string) []byte {
	b, _ := json.Marshal(map[string]any{
		"_user_type": "_regular", "_user_identifier": id, "_user_email": id + "@example.com",
		"_user_phone": "", "_user_name": "Go User", "_user_username": id,
		"_user_is_active": true, "_user_roles": []string{"admin"},
	})
	return b
}

func emit(args []string) {
	fs := flag.NewFlagSet("emit", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "")
	topic := fs.String("topic", "", "")
	n := fs.Int("n", 10, "")
	encoder := fs.String("encoder", "json", "")
	_ = fs.Parse(args)
	producer, err := sarama.NewSyncProducer(strings.Split(*brokers, ","), config(0))
	if err != nil {
		fail(err)
	}
	defer producer.Close()
	for i := 0; i < *n; i++ {
		var payload []byte
		if *encoder == "protobuf" {
			s, _ := structpb.NewStruct(map[string]any{"id": fmt.Sprintf("o%d", i), "total": float64(i)})
			payload, _ = protojson.Marshal(s)
		} else {
			payload, _ = json.Marshal(map[string]any{"id": fmt.Sprintf("o%d", i), "total": i})
		}
		msg := &sarama.ProducerMessage{
			Topic: *topic,
			Key:   sarama.StringEncoder(fmt.Sprintf("k%d", i%5)),
			Value: sarama.ByteEncoder(payload),
			Headers: []sarama.RecordHeader{
				{Key: []byte(hdrCorrelation), Value: []byte(fmt.Sprintf("go-corr-%d", i))},
				{Key: []byte(hdrLocale), Value: []byte("fa-IR")},
				{Key: []byte(hdrUser), Value: userJSON("go-user")},
				{Key: []byte(hdrReply), Value: []byte("go-replies")},
				{Key: []byte(hdrEncoder), Value: []byte(*encoder)},
			},
		}
		if _, _, err := producer.SendMessage(msg); err != nil {
			fail(err)
		}
	}
}

type received struct {
	ID, Topic, Key, Correlation, Locale, Reply, Encoder, RootID, RootAction, Action string
	User                                                                            map[string]any
	Payload                                                                         map[string]any
	Headers                                                                         map[string]string
}

type handler struct {
	action    string
	base      string
	retries   int
	failKeys  map[string]bool
	failAll   bool
	initial   time.Duration
	producer  sarama.SyncProducer
	out       *json.Encoder
	mu        *sync.Mutex
	left      *int
	done      chan struct{}
	once      *sync.Once
	lastSeen  *time.Time
	handleFor time.Duration
	reply     bool
}

// answer emits the reply to a request as a hafka handler's emitter.Emit would.
func (h *handler) answer(m *sarama.ConsumerMessage, headers map[string]string, payload map[string]any) {
	channel := headers[hdrReply]
	if !h.reply || channel == "" {
		return
	}
	body, _ := json.Marshal(map[string]any{"id": payload["id"], "answered_by": "go"})
	hs := []sarama.RecordHeader{
		{Key: []byte(hdrCorrelation), Value: []byte(headers[hdrCorrelation])},
		{Key: []byte(hdrLocale), Value: []byte(headers[hdrLocale])},
	}
	if user, ok := headers[hdrUser]; ok {
		hs = append(hs, sarama.RecordHeader{Key: []byte(hdrUser), Value: []byte(user)})
	}
	hs = append(hs,
		sarama.RecordHeader{Key: []byte(hdrReply), Value: []byte("")},
		sarama.RecordHeader{Key: []byte(hdrEncoder), Value: []byte("json")})
	if _, _, err := h.producer.SendMessage(&sarama.ProducerMessage{Topic: channel,
		Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(body), Headers: hs}); err != nil {
		fail(err)
	}
}

type setupEvent struct {
	Event  string
	Claims map[string][]int32
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_ = h.out.Encode(setupEvent{Event: "setup", Claims: s.Claims()})
	return nil
}

func (h *handler) Cleanup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_ = h.out.Encode(setupEvent{Event: "cleanup", Claims: s.Claims()})
	return nil
}

// backoff is hafka's: InitialInterval * 2^(n-1) after the record's timestamp, at most
// 100 * InitialInterval.
func (h *handler) backoff(n int) time.Duration {
	d := h.initial
	for i := 1; i < n; i++ {
		d *= 2
	}
	if max := 100 * h.initial; d > max {
		d = max
	}
	return d
}

func retryNumber(topic string) int {
	i := strings.LastIndex(topic, ".")
	n, err := strconv.Atoi(topic[i+1:])
	if err != nil {
		return 0
	}
	return n
}

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		if n := retryNumber(m.Topic); n > 0 {
			// hafka sleeps until the record's timestamp plus the back-off.
			if wait := time.Until(m.Timestamp.Add(h.backoff(n))); wait > 0 {
				time.Sleep(wait)
			}
		}
		select {
		case <-h.done:
			return nil // this test member is stopping: leave the record to the next one
		default:
		}
		if h.handleFor > 0 {
			time.Sleep(h.handleFor)
		}
		headers := map[string]string{}
		for _, hd := range m.Headers {
			headers[string(hd.Key)] = string(hd.Value)
		}
		id := fmt.Sprintf("%s-%d-%d", m.Topic, m.Partition, m.Offset)
		rootID, rootAction := headers[hdrRootID], headers[hdrRootAction]
		if rootID == "" {
			rootID = id
			m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte(hdrRootID), Value: []byte(id)})
		}
		if rootAction == "" {
			rootAction = h.action
			m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte(hdrRootAction), Value: []byte(h.action)})
		}
		r := received{ID: id, Topic: m.Topic, Key: string(m.Key), Correlation: headers[hdrCorrelation],
			Locale: headers[hdrLocale], Reply: headers[hdrReply], Encoder: headers[hdrEncoder],
			RootID: rootID, RootAction: rootAction, Action: h.action, Headers: headers}
		_ = json.Unmarshal([]byte(headers[hdrUser]), &r.User)
		if headers[hdrEncoder] == "protobuf" {
			st := &structpb.Struct{}
			if err := protojson.Unmarshal(m.Value, st); err == nil {
				r.Payload = st.AsMap()
			}
		} else {
			_ = json.Unmarshal(m.Value, &r.Payload)
		}
		h.answer(m, headers, r.Payload)
		if h.failAll || h.failKeys[string(m.Key)] {
			// hafka: forward to the next topic with every header copied and the root headers
			// added; the retry number comes from the topic, never from a header.
			n := retryNumber(m.Topic)
			next := fmt.Sprintf("%s.dlq", h.base)
			if n < h.retries {
				next = fmt.Sprintf("%s.retry.%d", h.base, n+1)
			}
			hs := make([]sarama.RecordHeader, 0, len(m.Headers))
			for _, hd := range m.Headers {
				hs = append(hs, *hd)
			}
			if _, _, err := h.producer.SendMessage(&sarama.ProducerMessage{Topic: next,
				Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(m.Value), Headers: hs}); err != nil {
				fail(err)
			}
		}
		s.MarkMessage(m, "")
		s.Commit()
		h.mu.Lock()
		_ = h.out.Encode(r)
		*h.lastSeen = time.Now()
		*h.left--
		if *h.left <= 0 {
			h.once.Do(func() { close(h.done) })
		}
		h.mu.Unlock()
	}
	return nil
}

func consume(args []string) {
	fs := flag.NewFlagSet("consume", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "")
	topic := fs.String("topic", "", "")
	action := fs.String("action", "", "")
	n := fs.Int("n", 10, "")
	retries := fs.Int("retries", 0, "")
	retryTopic := fs.String("retry-topic", "", "base of the retry/dlq topics (hafka's RetryTopic; default the action)")
	failKeys := fs.String("fail-keys", "", "")
	failAll := fs.Bool("fail-all", false, "every handler call fails")
	only := fs.String("only", "", "consume only these topics (comma-separated) instead of the topic and its retry topics")
	initial := fs.Duration("initial", 100*time.Millisecond, "hafka RetryPolicy.InitialInterval")
	idle := fs.Duration("idle", 0, "exit once no record came for this long (after the first)")
	handleFor := fs.Duration("handle-for", 0, "time each handler call takes")
	retention := fs.Duration("retention", 24*time.Hour, "sarama Consumer.Offsets.Retention (0: sarama's default, OffsetCommit v1)")
	timeout := fs.Duration("timeout", 60*time.Second, "")
	reply := fs.Bool("reply", false, "answer records that name a reply channel, as a hafka handler")
	consumeBackoff := fs.Duration("consume-backoff", 30*time.Second, "wait after a failed group session, as hexa-event's hafka receiver does (30s)")
	_ = fs.Parse(args)
	cfg := config(*retention)
	bs := strings.Split(*brokers, ",")
	base := *retryTopic
	if base == "" {
		base = *action
	}
	group, err := sarama.NewConsumerGroup(bs, *action, cfg)
	if err != nil {
		fail(err)
	}
	producer, err := sarama.NewSyncProducer(bs, config(0))
	if err != nil {
		fail(err)
	}
	topics := []string{*topic}
	for i := 1; i <= *retries; i++ {
		topics = append(topics, fmt.Sprintf("%s.retry.%d", base, i))
	}
	if *only != "" {
		topics = strings.Split(*only, ",")
	}
	fk := map[string]bool{}
	for _, k := range strings.Split(*failKeys, ",") {
		if k != "" {
			fk[k] = true
		}
	}
	left := *n
	var lastSeen time.Time
	h := &handler{action: *action, base: base, retries: *retries, failKeys: fk, failAll: *failAll,
		initial: *initial, producer: producer, out: json.NewEncoder(os.Stdout), mu: &sync.Mutex{},
		left: &left, done: make(chan struct{}), once: &sync.Once{}, lastSeen: &lastSeen,
		handleFor: *handleFor, reply: *reply}
	if *idle > 0 {
		go func() {
			for {
				time.Sleep(50 * time.Millisecond)
				h.mu.Lock()
				quiet := !lastSeen.IsZero() && time.Since(lastSeen) > *idle
				h.mu.Unlock()
				if quiet {
					h.once.Do(func() { close(h.done) })
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ctx.Err() == nil {
			if err := group.Consume(ctx, topics, h); err != nil && ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "consume:", err)
				select {
				case <-ctx.Done():
				case <-time.After(*consumeBackoff):
				}
			}
		}
	}()
	select {
	case <-h.done:
	case <-time.After(*timeout):
		cancel()
		fail(fmt.Errorf("timed out with %d events left", left))
	}
	cancel()
	_ = group.Close()
	_ = producer.Close()
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: interop vectors|emit|consume [flags]"))
	}
	switch os.Args[1] {
	case "vectors":
		vectors()
	case "emit":
		emit(os.Args[2:])
	case "consume":
		consume(os.Args[2:])
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
