package api

import (
	"net/http"
	"os"
	"path"
	"strings"
)

// CarServer serves the files of dir at GET /<name>, with Range support, so
// CARs on local disk can be offered by URL (ferry serve --cars DIR, and the
// walkthrough). Only plain files directly in dir are served: no listings,
// no subdirectories, no dot files, and no symlink leads outside dir.
func CarServer(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		if name == "" || strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
			http.NotFound(w, r)
			return
		}
		serveFile(w, r, dir, name)
	})
}

func serveFile(w http.ResponseWriter, r *http.Request, dir, name string) {
	// OpenInRoot refuses any path, symlink included, that resolves
	// outside dir.
	f, err := os.OpenInRoot(dir, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	if strings.HasSuffix(name, ".car") {
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
	}
	http.ServeContent(w, r, name, info.ModTime(), f)
}
