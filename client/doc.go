// Package client is the Go client of roost: it finds a room's owner, joins the room over a
// WebSocket, publishes with acknowledgements and receives the room's events in order, and it
// keeps doing so while the cluster moves the room from node to node.
//
// Give it the address of any node or router. Resolve asks where a room lives; Dial connects to
// it, following the redirects of the nodes that do not own it, and returns a Conn:
//
//	conn, err := client.Dial(ctx, "http://127.0.0.1:8080", "lobby", &client.Options{ClientID: "alice"})
//	if err != nil {
//		return err
//	}
//	defer conn.Close()
//
//	go func() {
//		for {
//			ev, err := conn.Next(ctx)
//			if err != nil {
//				return // ctx ended, or the Conn did: see conn.Err()
//			}
//			if ev.Type == client.EventMessage {
//				fmt.Printf("%d %s: %s\n", ev.Seq, ev.Client, ev.Data)
//			}
//		}
//	}()
//	seq, err := conn.Publish(ctx, map[string]string{"text": "hello"})
//
// # Moves and reconnects
//
// A Conn reconnects by itself when the room moves (close 4001), when the node goes away (1001)
// and when the network breaks: it dials the base address again, which redirects to wherever the
// room is now, and resumes with since=LastSeq and epoch=Epoch under the same client id. The
// caller sees one stream: an EventReconnected, then what was missed (or an EventGap for what the
// room no longer retains, or an EventReset when the room's state was lost and its numbering
// restarted), and never the same message twice. Publishes still waiting for their ack are sent
// again with the same id, which the server acknowledges once and delivers once.
//
// Closes that reconnecting would not fix (4401, 4403, 4008, 1009) end the Conn with a
// *CloseError. Set Options.DisableReconnect to handle every close yourself.
//
// # Dependencies
//
// The package imports only the standard library, gorilla/websocket and roost's protocol
// package, so a program using it pulls in no cluster code.
package client
