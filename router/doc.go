// Package router is roost's edge: a stateless gossip member that owns no rooms. It resolves each
// room's owner from its own ring view, answers GET /v1/rooms/{room} with a redirect to it, and
// proxies WebSocket upgrades to it frame by frame, passing close codes both ways, so browsers
// (which cannot follow a redirect on a WebSocket upgrade) reach the owner through it.
//
//	rt, err := router.New(router.DefaultConfig(), r) // r: a *ring.Ring with role router
//	srv := &http.Server{Handler: rt.Handler()}
//	...
//	rt.Close() // closes every proxied connection with 1001 and waits for them
package router
