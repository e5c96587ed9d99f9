package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// Controller is what a VMM process exposes through the API.
type Controller interface {
	Info() Info
	Start(ctx context.Context) error
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	Stop(ctx context.Context) error
	// Wait blocks until the VM ends.
	Wait(ctx context.Context) (*ExitInfo, error)
	SetIdentity(ctx context.Context, id Identity) error
	Snapshot(ctx context.Context, req SnapshotRequest) error
	Metrics() Metrics
	// Drives lists the spare drive slots.
	Drives(ctx context.Context) ([]DriveSlot, error)
	// AttachDrive attaches an image to an empty spare slot.
	AttachDrive(ctx context.Context, slot int, req DriveRequest) error
	// DetachDrive empties a spare slot.
	DetachDrive(ctx context.Context, slot int) error
}

// Sentinel errors a Controller returns to get specific HTTP statuses.
var (
	// ErrConflict: the request does not fit the VM's state (409).
	ErrConflict = errors.New("api: conflicts with the VM's state")
	// ErrUnsupported: this VMM cannot do that (501).
	ErrUnsupported = errors.New("api: not supported by this VMM")
	// ErrBadRequest: the request is malformed (400).
	ErrBadRequest = errors.New("api: bad request")
	// ErrNotFound: the request names something the VM does not have (404).
	ErrNotFound = errors.New("api: not found")
)

// maxBody bounds request bodies.
const maxBody = 1 << 20

// Handler returns the API's HTTP handler over c.
func Handler(c Controller, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, c.Info())
	})
	mux.HandleFunc("PUT /actions", func(w http.ResponseWriter, r *http.Request) {
		var req ActionRequest
		if !decode(w, r, &req) {
			return
		}
		var err error
		switch req.Action {
		case ActionStart:
			err = c.Start(r.Context())
		case ActionPause:
			err = c.Pause(r.Context())
		case ActionResume:
			err = c.Resume(r.Context())
		case ActionStop:
			err = c.Stop(r.Context())
		default:
			err = fmt.Errorf("%w: unknown action %q", ErrBadRequest, req.Action)
		}
		result(w, log, err)
	})
	mux.HandleFunc("GET /wait", func(w http.ResponseWriter, r *http.Request) {
		ei, err := c.Wait(r.Context())
		if err != nil {
			result(w, log, err)
			return
		}
		reply(w, http.StatusOK, ei)
	})
	mux.HandleFunc("PUT /identity", func(w http.ResponseWriter, r *http.Request) {
		var id Identity
		if !decode(w, r, &id) {
			return
		}
		err := c.SetIdentity(r.Context(), id)
		// ?resume=1 resumes the VM in the same request: a pool claim's
		// last two steps in one round trip.
		if err == nil && r.URL.Query().Get("resume") == "1" {
			err = c.Resume(r.Context())
		}
		result(w, log, err)
	})
	mux.HandleFunc("PUT /snapshot", func(w http.ResponseWriter, r *http.Request) {
		var req SnapshotRequest
		if !decode(w, r, &req) {
			return
		}
		result(w, log, c.Snapshot(r.Context(), req))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, c.Metrics())
	})
	mux.HandleFunc("GET /drives", func(w http.ResponseWriter, r *http.Request) {
		ds, err := c.Drives(r.Context())
		if err != nil {
			result(w, log, err)
			return
		}
		reply(w, http.StatusOK, ds)
	})
	mux.HandleFunc("PUT /drives/{slot}", func(w http.ResponseWriter, r *http.Request) {
		slot, err := slotParam(r)
		if err != nil {
			result(w, log, err)
			return
		}
		var req DriveRequest
		if !decode(w, r, &req) {
			return
		}
		if req.Path == "" {
			result(w, log, fmt.Errorf("%w: drive path is empty", ErrBadRequest))
			return
		}
		result(w, log, c.AttachDrive(r.Context(), slot, req))
	})
	mux.HandleFunc("DELETE /drives/{slot}", func(w http.ResponseWriter, r *http.Request) {
		slot, err := slotParam(r)
		if err != nil {
			result(w, log, err)
			return
		}
		result(w, log, c.DetachDrive(r.Context(), slot))
	})
	return mux
}

// slotParam parses the {slot} path element: a small non-negative integer.
func slotParam(r *http.Request) (int, error) {
	s := r.PathValue("slot")
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1<<16 {
		return 0, fmt.Errorf("%w: drive slot %q is not a slot number", ErrBadRequest, s)
	}
	return n, nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		reply(w, http.StatusBadRequest, errorBody{Error: "malformed request body: " + err.Error()})
		return false
	}
	return true
}

func result(w http.ResponseWriter, log *slog.Logger, err error) {
	if err == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrBadRequest):
		status = http.StatusBadRequest
	case errors.Is(err, ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, ErrUnsupported):
		status = http.StatusNotImplemented
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status = http.StatusServiceUnavailable
	}
	if status == http.StatusInternalServerError {
		log.Error("api request failed", "err", err)
	}
	reply(w, status, errorBody{Error: err.Error()})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Listen creates the API's Unix socket at path with mode 0600, replacing a
// stale socket file (but no other kind of file).
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api: %s exists and is not a socket", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	return l, nil
}

// Serve serves the API on l until ctx is done, then shuts down.
func Serve(ctx context.Context, l net.Listener, c Controller, log *slog.Logger) error {
	srv := &http.Server{Handler: Handler(c, log), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
