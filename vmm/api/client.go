package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
)

// Client talks to one VMM process's API socket.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client for the API socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 4,
	}
	return &Client{path: path, http: &http.Client{Transport: tr}}
}

// Socket returns the API socket path.
func (c *Client) Socket() string { return c.path }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// APIError is a non-2xx answer.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("vmm api: %d: %s", e.Status, e.Message) }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://vmm"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("vmm api %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&eb)
		return &APIError{Status: resp.StatusCode, Message: eb.Error}
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Info fetches the instance description.
func (c *Client) Info(ctx context.Context) (*Info, error) {
	var i Info
	return &i, c.do(ctx, http.MethodGet, "/", nil, &i)
}

// Action performs one of the Action* names.
func (c *Client) Action(ctx context.Context, action string) error {
	return c.do(ctx, http.MethodPut, "/actions", ActionRequest{Action: action}, nil)
}

// Wait blocks until the VM ends.
func (c *Client) Wait(ctx context.Context) (*ExitInfo, error) {
	var e ExitInfo
	return &e, c.do(ctx, http.MethodGet, "/wait", nil, &e)
}

// SetIdentity re-identifies the VM.
func (c *Client) SetIdentity(ctx context.Context, id Identity) error {
	return c.do(ctx, http.MethodPut, "/identity", id, nil)
}

// SetIdentityAndResume re-identifies the VM and resumes it in one request.
func (c *Client) SetIdentityAndResume(ctx context.Context, id Identity) error {
	return c.do(ctx, http.MethodPut, "/identity?resume=1", id, nil)
}

// Snapshot writes a snapshot of the paused VM.
func (c *Client) Snapshot(ctx context.Context, req SnapshotRequest) error {
	return c.do(ctx, http.MethodPut, "/snapshot", req, nil)
}

// Metrics fetches the counters.
func (c *Client) Metrics(ctx context.Context) (*Metrics, error) {
	var m Metrics
	return &m, c.do(ctx, http.MethodGet, "/metrics", nil, &m)
}

// Drives lists the spare drive slots.
func (c *Client) Drives(ctx context.Context) ([]DriveSlot, error) {
	var ds []DriveSlot
	return ds, c.do(ctx, http.MethodGet, "/drives", nil, &ds)
}

// AttachDrive attaches an image to an empty spare slot.
func (c *Client) AttachDrive(ctx context.Context, slot int, req DriveRequest) error {
	return c.do(ctx, http.MethodPut, "/drives/"+strconv.Itoa(slot), req, nil)
}

// DetachDrive empties a spare slot.
func (c *Client) DetachDrive(ctx context.Context, slot int) error {
	return c.do(ctx, http.MethodDelete, "/drives/"+strconv.Itoa(slot), nil, nil)
}
