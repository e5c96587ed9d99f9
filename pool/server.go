package pool

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// ClaimRequest is the body of POST /claim.
type ClaimRequest struct {
	Profile string `json:"profile"`
	ID      string `json:"id,omitempty"`
	Resume  bool   `json:"resume,omitempty"`
	// NoCold: with no ready VM, answer 409 (ErrEmpty) instead of
	// starting one cold.
	NoCold bool `json:"no_cold,omitempty"`
	// ViaDaemon makes Client claim through the daemon even when a ready
	// VM could be claimed directly (see ReadyDir), to compare the two.
	ViaDaemon bool `json:"-"`
}

type errorBody struct {
	Error string `json:"error"`
}

// Handler serves the pool's HTTP API (Serve also speaks the claim
// stream on the same socket, which Client uses to claim):
//
//	POST /claim   ClaimRequest -> Claim (404 unknown profile, 409 empty
//	              with no_cold, 503 closed)
//	GET  /status  []ProfileStatus
func Handler(m *Manager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /claim", func(w http.ResponseWriter, r *http.Request) {
		var req ClaimRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			reply(w, http.StatusBadRequest, errorBody{"malformed claim request: " + err.Error()})
			return
		}
		c, refill, err := m.claim(r.Context(), req.Profile, ClaimOptions{ID: req.ID, Resume: req.Resume, NoCold: req.NoCold})
		defer func() {
			// After the answer: net/http sends it only when flushed.
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			refill()
		}()
		if err == nil && r.Context().Err() != nil {
			// The claimer hung up: nobody would ever own this VMM.
			m.abandon(c)
			return
		}
		if err != nil {
			reply(w, claimStatus(err), errorBody{err.Error()})
			return
		}
		reply(w, http.StatusOK, c)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, m.Status())
	})
	return mux
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Serve serves the pool's API on a 0600 Unix socket at path until ctx is
// done, then removes the socket.
func Serve(ctx context.Context, m *Manager, path string, log *slog.Logger) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	old := umask(0o177)
	l, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	sctx, cancelStreams := context.WithCancel(ctx)
	defer cancelStreams()
	split := newSplitListener(sctx, l, m)
	srv := &http.Server{Handler: Handler(m), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(split) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		return err
	}
}
