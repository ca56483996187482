package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/sockmesh/sockmesh/client"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{
		// Reconnects go round these, re-subscribing every channel.
		URLs: []string{"ws://127.0.0.1:8000/socketcluster/", "ws://127.0.0.1:9000/socketcluster/"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	err = c.Subscribe(ctx, "news", func(channel string, data json.RawMessage) {
		fmt.Printf("%s: %s\n", channel, data) // runs on the reader goroutine: do not block
	})
	if err != nil {
		log.Fatal(err) // e.g. *client.Error{Name: "SubscribeDeniedError", ...}
	}
	if err := c.PublishAck(ctx, "news", map[string]string{"hello": "world"}); err != nil {
		log.Fatal(err)
	}
	answer, err := c.Invoke(ctx, "echo", 42)
	fmt.Println(string(answer), err)
}
