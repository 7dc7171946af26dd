package api

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// net/http answers a request it cannot parse (a malformed header line,
// headers over MaxHeaderBytes) itself, before any handler runs, with a
// plain-text "400 Bad Request" written straight to the connection. The
// listener below rewrites those answers into the API's JSON errors, so
// that every answer a client gets has a code and says what to fix.

// cannedHeaders is what net/http puts between the status line and the
// text of such an answer; a handler's answer always has a Date header
// and sorts Connection before Content-Type, so it never matches.
const cannedHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// jsonErrorListener wraps each accepted connection in a jsonErrorConn.
type jsonErrorListener struct{ net.Listener }

func (l jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if cw, ok := c.(closeWriter); ok {
		return &jsonErrorCloseWriteConn{jsonErrorConn{c}, cw}, nil
	}
	return &jsonErrorConn{c}, nil
}

// closeWriter is what net/http uses to half-close a connection after a
// 431 answer; *net.TCPConn implements it.
type closeWriter interface{ CloseWrite() error }

// jsonErrorConn rewrites net/http's own error answers as JSON errors.
type jsonErrorConn struct{ net.Conn }

type jsonErrorCloseWriteConn struct {
	jsonErrorConn
	cw closeWriter
}

func (c *jsonErrorCloseWriteConn) CloseWrite() error { return c.cw.CloseWrite() }

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	if b, ok := rewriteCanned(p); ok {
		if _, err := c.Conn.Write(b); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// rewriteCanned returns the JSON answer for one of net/http's plain-text
// error answers, and false for anything else.
func rewriteCanned(p []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(p, []byte("HTTP/1.1 "))
	if !ok || len(rest) < 4 || (rest[0] != '4' && rest[0] != '5') {
		return nil, false
	}
	status, err := strconv.Atoi(string(rest[:3]))
	if err != nil {
		return nil, false
	}
	i := bytes.Index(rest, []byte(cannedHeaders))
	if i < 0 || bytes.IndexByte(rest[:i], '\n') >= 0 {
		return nil, false
	}
	text := string(rest[i+len(cannedHeaders):])
	msg := cannedMessage(status, text)
	var body bytes.Buffer
	if err := newJSONEncoder(&body).Encode(apiv1.ErrorBody{Error: apiv1.Error{Code: apiv1.CodeInvalidRequest, Message: msg}}); err != nil {
		return nil, false
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: %d\r\n\r\n",
		status, http.StatusText(status), body.Len())
	out.Write(body.Bytes())
	return out.Bytes(), true
}

// cannedMessage says what is wrong with a request net/http refused with
// status and text ("400 Bad Request: missing required Host header").
func cannedMessage(status int, text string) string {
	detail := ""
	if _, d, ok := bytes.Cut([]byte(text), []byte(": ")); ok {
		detail = clip(string(d), maxErrorDetail)
	}
	switch {
	case status == http.StatusRequestHeaderFieldsTooLarge:
		return "the request headers are larger than the limit of 64 KiB: send fewer or shorter headers"
	case status == http.StatusNotImplemented:
		return "the request's Transfer-Encoding is not supported: send the body with a Content-Length or chunked"
	case detail != "":
		return fmt.Sprintf("the HTTP request is malformed (%s): check the headers you send", detail)
	}
	return "the HTTP request is malformed: a header line has no colon or holds a character headers may not (a newline pasted into a token, or an error message pasted as one, does this); check the headers you send"
}
