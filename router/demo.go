package router

import (
	"embed"
	"io/fs"
	"net/http"
)

// The demo page (GET /): pick a room and chat in it with presence, watch roost dev's demo stream,
// and see the cluster's members and which node owns which room. Plain HTML and JavaScript on the
// JavaScript client (sdk/js): web/roost-client.js is its minified bundle, made by `npm run bundle`
// there and committed, as embed cannot reach outside this package (sdk/js's tests fail when it is
// out of date). It uses only the public API, through the router that served it.
//
//go:embed web/index.html web/app.js web/style.css web/roost-client.js
var web embed.FS

var (
	webRoot, _ = fs.Sub(web, "web")
	demoFiles  = http.FileServerFS(webRoot)
	demoPage   = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, webRoot, "index.html")
	})
)
