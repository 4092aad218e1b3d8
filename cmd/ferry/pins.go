package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// psaCall calls ferry's Pinning Service API and returns the answer's body,
// or an error with the service's reason and details.
func psaCall(ctx context.Context, server, token, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	base := server
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := &http.Client{Timeout: time.Minute}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Reason, Details string } `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Reason != "" {
			return nil, fmt.Errorf("%s %s: %s: %s", method, path, e.Error.Reason, e.Error.Details)
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return data, nil
}

func runPin(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("pin", "pin [flags] CID", stderr)
	api := serverFlags(fs, defaultHTTP, "")
	name := fs.String("name", "", "the pin's name")
	var origins strList
	fs.Var(&origins, "origin", "an http(s) Trustless Gateway or a multiaddr that has the DAG (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: pin takes one CID", errUsage)
	}
	var list []string
	for _, o := range origins {
		list = append(list, strings.Split(o, ",")...)
	}
	pin := map[string]any{"cid": fs.Arg(0), "name": *name, "origins": list}
	data, err := psaCall(ctx, api.server, api.token, http.MethodPost, "/psa/pins", pin)
	if err != nil {
		return err
	}
	return printRaw(stdout, data)
}

func runPins(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("pins", "pins [flags]", stderr)
	api := serverFlags(fs, defaultHTTP, "")
	status := fs.String("status", "queued,pinning,pinned,failed", "statuses to list, comma-separated")
	cid := fs.String("cid", "", "only the pins of these CIDs (comma-separated, at most 10)")
	limit := fs.Int("limit", 1000, "at most this many pins, newest first (1 to 1000)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("%w: pins takes no arguments", errUsage)
	}
	q := url.Values{"status": {*status}, "limit": {strconv.Itoa(*limit)}}
	if *cid != "" {
		q.Set("cid", *cid)
	}
	data, err := psaCall(ctx, api.server, api.token, http.MethodGet, "/psa/pins?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	var list struct {
		Count   int               `json:"count"`
		Results []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("GET /psa/pins: %v", err)
	}
	for _, r := range list.Results {
		if _, err := fmt.Fprintf(stdout, "%s\n", r); err != nil {
			return err
		}
	}
	if list.Count > len(list.Results) {
		fmt.Fprintf(stderr, "%d of %d pins listed (--limit)\n", len(list.Results), list.Count)
	}
	return nil
}

// printRaw prints a JSON answer indented.
func printRaw(w io.Writer, data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(data), "", "  "); err != nil {
		_, err = w.Write(data)
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}
