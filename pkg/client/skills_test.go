package client_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

func TestAddAndRemoveSkillSendWhatTheAPITakes(t *testing.T) {
	var got struct {
		method, path, ctype, auth string
		query                     url.Values
		body                      []byte
		length                    int64
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path, got.ctype, got.auth = r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Authorization")
		got.query, got.length = r.URL.Query(), r.ContentLength
		got.body, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		switch r.Method {
		case http.MethodPost:
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"id":"text.upper","version":"1.0.0","kind":"wasm","module":"ab","local":true,"providers":[]}`)
		case http.MethodDelete:
			if r.URL.Path == "/v1/skills/echo" {
				w.WriteHeader(http.StatusConflict)
				_, _ = io.WriteString(w, `{"error":{"code":"skill_not_removable","message":"echo is built in"}}`)
				return
			}
			_, _ = io.WriteString(w, `{"removed":[{"id":"text.upper","version":"1.0.0","kind":"wasm","local":false,"providers":[]}]}`)
		}
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, client.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	module := []byte("\x00asm\x01\x00\x00\x00rest")
	sk, err := c.AddSkill(ctx, client.WasmSkill{Name: "text.upper", Version: "1.0.0", Memory: "16MiB", Timeout: "2s",
		Output: "1MiB", Deterministic: true, InputSchema: []byte(`{"type":"string"}`)}, module)
	if err != nil {
		t.Fatal(err)
	}
	if sk.Kind != apiv1.SkillWasm || sk.Module != "ab" {
		t.Errorf("answer %+v", sk)
	}
	want := url.Values{"name": {"text.upper"}, "version": {"1.0.0"}, "memory": {"16MiB"}, "timeout": {"2s"}, "output": {"1MiB"},
		"deterministic": {"true"}, "input_schema": {`{"type":"string"}`}}
	if got.method != "POST" || got.path != "/v1/skills" || got.ctype != apiv1.WasmMediaType || got.auth != "Bearer tok" ||
		got.query.Encode() != want.Encode() || string(got.body) != string(module) || got.length != int64(len(module)) {
		t.Fatalf("sent %+v", got)
	}

	removed, err := c.RemoveSkill(ctx, "text.upper", "1.0.0")
	if err != nil || len(removed) != 1 || removed[0].ID != "text.upper" {
		t.Fatalf("RemoveSkill: %+v, %v", removed, err)
	}
	if got.method != "DELETE" || got.path != "/v1/skills/text.upper" || got.query.Get("version") != "1.0.0" {
		t.Fatalf("sent %+v", got)
	}
	if _, err := c.RemoveSkill(ctx, "echo", ""); !client.IsCode(err, apiv1.CodeNotRemovable) {
		t.Fatalf("RemoveSkill(echo): %v", err)
	}
	if len(got.query) != 0 {
		t.Errorf("a remove without version sent %v", got.query)
	}
}
