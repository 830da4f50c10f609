// Package protocol holds roost's public wire contract: the WebSocket frames, close codes, room
// names, the HTTP error body and the JSON of the resolve and cluster endpoints. The node speaks
// it, the router relays it and the client library reads it; it depends on nothing else in roost,
// so a client pulls in no cluster code.
package protocol
