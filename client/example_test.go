package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/roost-dev/roost/client"
)

// Join a room through any member of the cluster, print what arrives and publish one message.
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := client.Dial(ctx, "http://127.0.0.1:8080", "lobby", &client.Options{ClientID: "alice", Presence: true})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Println("joined", conn.Room(), "on", conn.Welcome().Node)

	go func() {
		for {
			ev, err := conn.Next(ctx)
			if err != nil {
				return
			}
			switch ev.Type {
			case client.EventMessage:
				fmt.Printf("#%d %s: %s\n", ev.Seq, ev.Client, ev.Data)
			case client.EventPresence:
				fmt.Println("members:", ev.Count)
			case client.EventGap, client.EventReset:
				fmt.Println("missed some messages:", ev.Type)
			case client.EventReconnected:
				fmt.Println("now on", ev.Welcome.Node, "after", ev.Err)
			}
		}
	}()

	seq, err := conn.Publish(ctx, map[string]string{"text": "hello"})
	var refused *client.ServerError
	switch {
	case errors.As(err, &refused):
		fmt.Println("refused:", refused.Code)
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("published as", seq)
	}
}

// Resume later where an earlier connection stopped.
func ExampleOptions_resume() {
	ctx := context.Background()
	conn, err := client.Dial(ctx, "http://127.0.0.1:8080", "lobby", nil)
	if err != nil {
		log.Fatal(err)
	}
	// ... Next until done ...
	seq, epoch := conn.LastSeq(), conn.Epoch()
	conn.Close()

	again, err := client.Dial(ctx, "http://127.0.0.1:8080", "lobby", &client.Options{Since: &seq, Epoch: epoch})
	if err != nil {
		log.Fatal(err)
	}
	defer again.Close()
}

// Find which node owns a room.
func ExampleResolve() {
	owner, err := client.Resolve(context.Background(), "http://127.0.0.1:8080", "lobby", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(owner.Node, owner.WSURL, owner.TCPAddr)
}
