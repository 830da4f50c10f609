package router

import (
	"embed"
	"io/fs"
	"net/http"
)

// The demo page (GET /): pick a room and chat in it with presence, watch roost dev's demo stream,
// and see the cluster's members and which node owns which room. Plain HTML and JavaScript, no
// build step; it uses only the public API, through the router that served it.
//
//go:embed web/index.html web/app.js web/style.css
var web embed.FS

var (
	webRoot, _ = fs.Sub(web, "web")
	demoFiles  = http.FileServerFS(webRoot)
	demoPage   = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, webRoot, "index.html")
	})
)
