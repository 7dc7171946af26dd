package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// fakeInstaller records what the API asks of it and answers with err.
type fakeInstaller struct {
	max int64
	reg *skill.Registry // installs register a stub skill here, if set

	mu        sync.Mutex
	err       error // returned by Install and Remove when set
	installed []wasm.Manifest
	modules   [][]byte
	removed   []string // name@version
}

func (f *fakeInstaller) MaxModule() int64 { return f.max }

func (f *fakeInstaller) Install(_ context.Context, m wasm.Manifest, module []byte) (api.SkillInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return api.SkillInfo{}, f.err
	}
	f.installed = append(f.installed, m)
	f.modules = append(f.modules, module)
	if f.reg != nil {
		if err := f.reg.Register(stubSkill{skill.Descriptor{ID: m.Name, Version: m.Version}}); err != nil {
			return api.SkillInfo{}, err
		}
	}
	return api.SkillInfo{Kind: apiv1.SkillWasm, Manifest: m, Limits: limitsOf(m)}, nil
}

type stubSkill struct{ d skill.Descriptor }

func (s stubSkill) Descriptor() skill.Descriptor { return s.d }
func (stubSkill) Execute(context.Context, skill.SkillInput) ([]byte, error) {
	return nil, fmt.Errorf("stub")
}

func limitsOf(m wasm.Manifest) wasm.Limits {
	l := m.Limits
	if l.Memory == 0 {
		l.Memory = wasm.DefaultMemory
	}
	return l
}

func (f *fakeInstaller) Remove(_ context.Context, name reputation.SkillID, version string) ([]api.SkillInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	f.removed = append(f.removed, string(name)+"@"+version)
	var out []api.SkillInfo
	for _, m := range f.installed {
		if m.Name == name && (version == "" || m.Version == version) {
			out = append(out, api.SkillInfo{Kind: apiv1.SkillWasm, Manifest: m, Limits: limitsOf(m)})
		}
	}
	return out, nil
}

func (f *fakeInstaller) Describe(id reputation.SkillID) (api.SkillInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.installed {
		if m.Name == id {
			return api.SkillInfo{Kind: apiv1.SkillWasm, Manifest: m, Limits: limitsOf(m)}, true
		}
	}
	return api.SkillInfo{Kind: apiv1.SkillBuiltin}, true
}

func (f *fakeInstaller) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

// wasmBody is the smallest byte string with the wasm magic.
var wasmBody = "\x00asm\x01\x00\x00\x00"

func installServer(t *testing.T, f *fakeInstaller, opts ...api.Option) http.Handler {
	t.Helper()
	e := newEngine(t)
	f.reg = e.Registry
	deps := e.Deps()
	deps.Installer = f
	s, err := api.New(deps, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s.Handler()
}

func wasmRequest(t testing.TB, h http.Handler, method, path string, body io.Reader, hdr ...string) answer {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	if body != nil {
		req.Header.Set("Content-Type", apiv1.WasmMediaType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return answer{rec.Code, rec.Header(), rec.Body.Bytes()}
}

// chunked hides a reader's length, so the request has no Content-Length.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestInstallSkillErrors(t *testing.T) {
	f := &fakeInstaller{max: 1024}
	h := installServer(t, f, api.WithMaxBodyBytes(4096))
	big := strings.Repeat("x", 2000)
	ok := "/v1/skills?name=text.upper&version=1.0.0"
	cases := []struct {
		name       string
		path       string
		body       io.Reader
		hdr        []string
		installErr error
		status     int
		code       string
		says       string
	}{
		{name: "a body that is not application/wasm is a 415", path: ok, body: strings.NewReader(wasmBody),
			hdr: []string{"Content-Type", "application/octet-stream"}, status: 415, code: apiv1.CodeUnsupportedType, says: "application/wasm"},
		{name: "a missing name is a 400", path: "/v1/skills?version=1", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "name and version are required"},
		{name: "a missing version is a 400", path: "/v1/skills?name=a.b", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "name and version are required"},
		{name: "an unknown parameter is a 400", path: ok + "&memroy=1MiB", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: `memroy`},
		{name: "a repeated parameter is a 400", path: ok + "&memory=1MiB&memory=2MiB", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "given 2 times"},
		{name: "a bad size is a 400", path: ok + "&memory=lots", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "parameter memory"},
		{name: "a bad timeout is a 400", path: ok + "&timeout=soon", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "parameter timeout"},
		{name: "a bad deterministic is a 400", path: ok + "&deterministic=maybe", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "deterministic"},
		{name: "a schema that is not JSON is a 400", path: ok + "&input_schema=%7Bnope", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "input_schema is not JSON"},
		{name: "a schema that is not JSON Schema is a 400", path: ok + `&input_schema=%7B%22type%22%3A7%7D`, body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "input_schema"},
		{name: "a bad skill name is a 400", path: "/v1/skills?name=Bad%20Name&version=1", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "name"},
		{name: "a bad version is a 400", path: "/v1/skills?name=a.b&version=one", body: strings.NewReader(wasmBody),
			status: 400, code: apiv1.CodeInvalidRequest, says: "version"},
		{name: "a module declared over the module limit is a 413 naming it", path: ok, body: strings.NewReader(big),
			status: 413, code: apiv1.CodeModuleTooLarge, says: "2000 bytes, over this node's limit of 1KiB (1024 bytes, wasm.max_module)"},
		{name: "a module streamed over the module limit is a 413 naming it", path: ok, body: chunked{strings.NewReader(big)},
			status: 413, code: apiv1.CodeModuleTooLarge, says: "limit of 1KiB (1024 bytes, wasm.max_module)"},
		{name: "an empty body is a 422", path: ok, body: strings.NewReader(""),
			status: 422, code: apiv1.CodeInvalidModule, says: "empty"},
		{name: "a taken name is a 409", path: ok, body: strings.NewReader(wasmBody), installErr: fmt.Errorf(`"echo" is built in: %w`, api.ErrSkillExists),
			status: 409, code: apiv1.CodeSkillExists, says: "built in"},
		{name: "a module that is not wasm is a 422", path: ok, body: strings.NewReader("hello"), installErr: fmt.Errorf("no magic: %w", wasm.ErrNotWasm),
			status: 422, code: apiv1.CodeInvalidModule, says: "no magic"},
		{name: "a module that does not compile is a 422", path: ok, body: strings.NewReader(wasmBody), installErr: fmt.Errorf("no _start: %w", wasm.ErrCompile),
			status: 422, code: apiv1.CodeInvalidModule, says: "no _start"},
		{name: "a module over the engine's limit is a 413", path: ok, body: strings.NewReader(wasmBody), installErr: fmt.Errorf("over 1KiB: %w", wasm.ErrModuleTooLarge),
			status: 413, code: apiv1.CodeModuleTooLarge, says: "over 1KiB"},
		{name: "an installer that is closing is a 503", path: ok, body: strings.NewReader(wasmBody), installErr: fmt.Errorf("install: %w", wasm.ErrClosed),
			status: 503, code: apiv1.CodeShuttingDown},
		{name: "any other installer failure is a 500", path: ok, body: strings.NewReader(wasmBody), installErr: fmt.Errorf("disk full"),
			status: 500, code: apiv1.CodeInternal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.setErr(tc.installErr)
			before := len(f.installed)
			a := wasmRequest(t, h, "POST", tc.path, tc.body, tc.hdr...)
			if a.status != tc.status || a.errorCode(t) != tc.code || !strings.Contains(string(a.body), tc.says) {
				t.Fatalf("answer %d %s, want %d %s saying %q", a.status, a.body, tc.status, tc.code, tc.says)
			}
			if len(f.installed) != before {
				t.Fatalf("a refused install reached the installer: %+v", f.installed[before:])
			}
		})
	}
	f.setErr(nil)
}

func TestInstallSkillPassesTheManifestAndAnswersWithTheSkill(t *testing.T) {
	f := &fakeInstaller{max: 1 << 20}
	h := installServer(t, f, api.WithMaxBodyBytes(1024))
	// A module over api.max_body_bytes but under the module limit is taken.
	module := wasmBody + strings.Repeat("\x00", 4000)
	path := "/v1/skills?name=text.upper&version=1.2.0&description=shout&memory=16MiB&timeout=2s&output=4KiB&input=1MB&deterministic=true" +
		"&input_schema=%7B%22type%22%3A%22string%22%7D"
	a := wasmRequest(t, h, "POST", path, strings.NewReader(module))
	if a.status != http.StatusCreated {
		t.Fatalf("POST: %d %s", a.status, a.body)
	}
	if len(f.installed) != 1 {
		t.Fatalf("installer got %d installs", len(f.installed))
	}
	m := f.installed[0]
	want := wasm.Manifest{Name: "text.upper", Version: "1.2.0", Description: "shout", Module: wasm.ModuleIDOf([]byte(module)),
		InputSchema: json.RawMessage(`{"type":"string"}`), Deterministic: true,
		Limits: wasm.Limits{Memory: 16 * wasm.MiB, Timeout: wasm.Duration(2e9), Output: 4 * wasm.KiB, Input: 1000 * 1000}}
	gotJSON, _ := json.Marshal(m)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) || string(f.modules[0]) != module {
		t.Fatalf("installer got %s (module %d bytes), want %s", gotJSON, len(f.modules[0]), wantJSON)
	}
	var sk apiv1.Skill
	if err := json.Unmarshal(a.body, &sk); err != nil {
		t.Fatal(err)
	}
	if sk.ID != "text.upper" || sk.Kind != apiv1.SkillWasm || sk.Module != m.Module.String() || !sk.Local || len(sk.Providers) != 1 ||
		sk.Limits == nil || sk.Limits.Memory != "16MiB" || sk.Limits.Timeout != "2s" || !sk.Deterministic {
		t.Fatalf("answer %s", a.body)
	}

	// The list shows it with its kind and hash, and built-ins as builtin.
	l := request(t, h, "GET", "/v1/skills", "")
	var list []apiv1.Skill
	if err := json.Unmarshal(l.body, &list); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]apiv1.Skill{}
	for _, s := range list {
		kinds[s.ID] = s
	}
	if s := kinds["text.upper"]; s.Kind != apiv1.SkillWasm || s.Module != m.Module.String() {
		t.Errorf("listed %+v", s)
	}
	if s := kinds["echo"]; s.Kind != apiv1.SkillBuiltin || s.Module != "" || s.Limits != nil {
		t.Errorf("listed %+v", s)
	}
}

func TestRemoveSkill(t *testing.T) {
	f := &fakeInstaller{max: 1 << 20}
	h := installServer(t, f)
	if a := wasmRequest(t, h, "POST", "/v1/skills?name=text.upper&version=1.0.0", strings.NewReader(wasmBody)); a.status != 201 {
		t.Fatalf("POST: %d %s", a.status, a.body)
	}
	a := wasmRequest(t, h, "DELETE", "/v1/skills/text.upper?version=1.0.0", nil)
	var out apiv1.RemovedSkills
	if err := json.Unmarshal(a.body, &out); err != nil || a.status != 200 || len(out.Removed) != 1 || out.Removed[0].Module == "" {
		t.Fatalf("DELETE: %d %s", a.status, a.body)
	}
	if f.removed[0] != "text.upper@1.0.0" {
		t.Fatalf("installer removed %v", f.removed)
	}
	if a := wasmRequest(t, h, "DELETE", "/v1/skills/text.upper", nil); a.status != 200 || f.removed[1] != "text.upper@" {
		t.Fatalf("DELETE without version: %d %s, removed %v", a.status, a.body, f.removed)
	}

	cases := []struct {
		name   string
		path   string
		err    error
		status int
		code   string
	}{
		{"an unknown skill is a 404", "/v1/skills/no.such", fmt.Errorf("remove: %w", wasm.ErrNotFound), 404, apiv1.CodeNotFound},
		{"a built-in is a 409", "/v1/skills/echo", fmt.Errorf("echo is built in: %w", api.ErrNotRemovable), 409, apiv1.CodeNotRemovable},
		{"an unknown parameter is a 400", "/v1/skills/a.b?versoin=1", nil, 400, apiv1.CodeInvalidRequest},
		{"a bad name is a 400", "/v1/skills/Bad", nil, 400, apiv1.CodeInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.setErr(tc.err)
			n := len(f.removed)
			a := wasmRequest(t, h, "DELETE", tc.path, nil)
			if a.status != tc.status || a.errorCode(t) != tc.code {
				t.Fatalf("answer %d %s, want %d %s", a.status, a.body, tc.status, tc.code)
			}
			if tc.err == nil && len(f.removed) != n {
				t.Fatalf("a refused remove reached the installer")
			}
		})
	}
}

func TestSkillEndpointsNeedTheTokenAndAnInstaller(t *testing.T) {
	f := &fakeInstaller{max: 1 << 20}
	h := installServer(t, f, api.WithToken("s3cret"))
	for _, tc := range []struct {
		method, path string
		body         io.Reader
	}{{"POST", "/v1/skills?name=a.b&version=1", strings.NewReader(wasmBody)}, {"DELETE", "/v1/skills/a.b", nil}} {
		a := wasmRequest(t, h, tc.method, tc.path, tc.body, "Authorization", "Bearer wrong")
		if a.status != 401 || a.errorCode(t) != apiv1.CodeUnauthorized {
			t.Errorf("%s %s with a wrong token: %d %s", tc.method, tc.path, a.status, a.body)
		}
	}
	if len(f.installed)+len(f.removed) != 0 {
		t.Fatal("an unauthorized request reached the installer")
	}

	// Without an installer the node cannot add skills.
	plain := server(t, newEngine(t)).Handler()
	if a := wasmRequest(t, plain, "POST", "/v1/skills?name=a.b&version=1", strings.NewReader(wasmBody)); a.status != 405 {
		t.Errorf("POST without an installer: %d %s", a.status, a.body)
	}
	if a := wasmRequest(t, plain, "DELETE", "/v1/skills/a.b", nil); a.status != 404 {
		t.Errorf("DELETE without an installer: %d %s", a.status, a.body)
	}
}

func TestInstallSkillIsRefusedWhileDraining(t *testing.T) {
	f := &fakeInstaller{max: 1 << 20}
	e := newEngine(t)
	f.reg = e.Registry
	deps := e.Deps()
	deps.Installer = f
	s, err := api.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	s.Drain()
	a := wasmRequest(t, s.Handler(), "POST", "/v1/skills?name=a.b&version=1", strings.NewReader(wasmBody))
	if a.status != 503 || a.errorCode(t) != apiv1.CodeShuttingDown || len(f.installed) != 0 {
		t.Fatalf("POST while draining: %d %s", a.status, a.body)
	}
}
