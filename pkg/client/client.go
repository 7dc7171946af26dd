package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// APIFile is the file in the repo dir where a running daemon writes the URL
// of its API.
const APIFile = "api"

// DefaultTokenFile is the token file's name in the repo dir unless the
// config's api.token_file says otherwise.
const DefaultTokenFile = "api-token"

// ErrUnreachable is wrapped by every error that means no daemon answered:
// none is running for the repo, or its address does not answer.
var ErrUnreachable = errors.New("daemon unreachable")

// unreachableError wraps ErrUnreachable with a message that says it all,
// without the sentinel's text appended.
type unreachableError struct{ msg string }

func (e *unreachableError) Error() string { return e.msg }
func (e *unreachableError) Unwrap() error { return ErrUnreachable }

func unreachablef(format string, args ...any) error {
	return &unreachableError{fmt.Sprintf(format, args...)}
}

// Error is an error answer from the API.
type Error struct {
	Status  int    // HTTP status
	Code    string // apiv1.Code*
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (%s)", e.Message, e.Code)
}

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Client talks to one daemon. It is safe for concurrent use.
type Client struct {
	base  string // without trailing slash
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends a bearer token with every request.
func WithToken(tok string) Option { return func(c *Client) { c.token = tok } }

// WithHTTPClient replaces the default HTTP client (which has no overall
// timeout; each call is bounded by its ctx).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client for the API at baseURL, such as
// "http://127.0.0.1:5080".
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("API address %q: want a URL such as http://127.0.0.1:5080", baseURL)
	}
	c := &Client{base: strings.TrimRight(u.String(), "/"), hc: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// FromRepo returns a client for the daemon running on the repo dir: it
// reads the API address from DIR/api and the token from tokenFile
// (relative to dir unless absolute; DefaultTokenFile if empty), if that
// file exists. With no DIR/api the error wraps ErrUnreachable.
func FromRepo(dir, tokenFile string, opts ...Option) (*Client, error) {
	raw, err := os.ReadFile(filepath.Join(dir, APIFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, unreachablef("no daemon is running on repo %s (it has no %s file): start one with `cortexd daemon`", dir, APIFile)
	}
	if err != nil {
		return nil, fmt.Errorf("read API address: %w", err)
	}
	if tokenFile == "" {
		tokenFile = DefaultTokenFile
	}
	if !filepath.IsAbs(tokenFile) {
		tokenFile = filepath.Join(dir, tokenFile)
	}
	if tok, err := os.ReadFile(tokenFile); err == nil {
		opts = append([]Option{WithToken(strings.TrimSpace(string(tok)))}, opts...)
	}
	return New(strings.TrimSpace(string(raw)), opts...)
}

// BaseURL returns the API's base URL.
func (c *Client) BaseURL() string { return c.base }

func (c *Client) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// do sends a request and decodes a 2xx JSON answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	return c.doRequest(req, out)
}

// doRequest sends req and decodes a 2xx JSON answer into out (if not nil).
func (c *Client) doRequest(req *http.Request, out any) error {
	method, path := req.Method, req.URL.Path
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err == nil {
		return resp, nil
	}
	if ctxErr := req.Context().Err(); ctxErr != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, ctxErr)
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || isDialError(err) {
		return nil, unreachablef("daemon at %s does not answer (%v): is `cortexd daemon` running?", c.base, rootCause(err))
	}
	return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body apiv1.ErrorBody
	if err := json.Unmarshal(b, &body); err != nil || body.Error.Code == "" {
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = resp.Status
		}
		return &Error{Status: resp.StatusCode, Code: "http_" + fmt.Sprint(resp.StatusCode), Message: msg}
	}
	return &Error{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message}
}

// Health returns nil if GET /healthz answers 200.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil)
}

// Ready returns nil if GET /readyz answers 200: the node is started and
// not draining.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", nil, nil)
}

// ID returns the node's identity.
func (c *Client) ID(ctx context.Context) (*apiv1.Identity, error) {
	var out apiv1.Identity
	return &out, c.do(ctx, http.MethodGet, "/v1/id", nil, &out)
}

// Peers returns the peers this node knows.
func (c *Client) Peers(ctx context.Context) ([]apiv1.Peer, error) {
	var out []apiv1.Peer
	return out, c.do(ctx, http.MethodGet, "/v1/peers", nil, &out)
}

// Skills returns the skills offered here and on the network.
func (c *Client) Skills(ctx context.Context) ([]apiv1.Skill, error) {
	var out []apiv1.Skill
	return out, c.do(ctx, http.MethodGet, "/v1/skills", nil, &out)
}

// Metrics returns the metrics snapshot.
func (c *Client) Metrics(ctx context.Context) (*apiv1.Metrics, error) {
	var out apiv1.Metrics
	return &out, c.do(ctx, http.MethodGet, "/v1/metrics", nil, &out)
}

// Trust returns the trust this node has in every peer it knows.
func (c *Client) Trust(ctx context.Context) ([]apiv1.TrustEntry, error) {
	var out []apiv1.TrustEntry
	return out, c.do(ctx, http.MethodGet, "/v1/trust", nil, &out)
}

// TrustOf returns the trust this node has in one peer.
func (c *Client) TrustOf(ctx context.Context, peerID string) (*apiv1.TrustEntry, error) {
	var out apiv1.TrustEntry
	return &out, c.do(ctx, http.MethodGet, "/v1/trust/"+url.PathEscape(peerID), nil, &out)
}

// Prometheus returns the text of GET /metrics.
func (c *Client) Prometheus(ctx context.Context) (string, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.send(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", decodeError(resp)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read /metrics: %w", err)
	}
	return string(b), nil
}

// durationParam formats d for a query parameter.
func durationParam(d time.Duration) string { return d.String() }
