package client

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// WasmSkill is what AddSkill installs: a module and its manifest's fields.
// Zero limits leave the node's defaults (its wasm.default config); sizes
// are strings such as "64MiB", the timeout a Go duration such as "30s".
type WasmSkill struct {
	Name          string
	Version       string
	Description   string
	InputSchema   []byte // JSON Schema; nil for none
	Memory        string
	Timeout       string
	Input         string
	Output        string
	Deterministic bool
}

// AddSkill installs a wasm module as a skill on the node (POST
// /v1/skills): the node checks and compiles it, stores it in its repo and
// registers it at once. Errors are *Error with codes skill_exists,
// invalid_module, module_too_large or invalid_request.
func (c *Client) AddSkill(ctx context.Context, s WasmSkill, module []byte) (*apiv1.Skill, error) {
	q := url.Values{apiv1.ParamName: {s.Name}, apiv1.ParamVersion: {s.Version}}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set(apiv1.ParamDescription, s.Description)
	set(apiv1.ParamInputSchema, string(s.InputSchema))
	set(apiv1.ParamMemory, s.Memory)
	set(apiv1.ParamTimeout, s.Timeout)
	set(apiv1.ParamInput, s.Input)
	set(apiv1.ParamOutput, s.Output)
	if s.Deterministic {
		q.Set(apiv1.ParamDeterministic, strconv.FormatBool(true))
	}
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/skills?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(module)), int64(len(module))
	req.Header.Set("Content-Type", apiv1.WasmMediaType)
	var out apiv1.Skill
	return &out, c.doRequest(req, &out)
}

// RemoveSkill unregisters and deletes the wasm skill name at version, or
// at every stored version if version is empty (DELETE /v1/skills/{name}).
// Tasks already running finish. It returns what was removed.
func (c *Client) RemoveSkill(ctx context.Context, name, version string) ([]apiv1.Skill, error) {
	path := "/v1/skills/" + url.PathEscape(name)
	if version != "" {
		path += "?" + url.Values{apiv1.ParamVersion: {version}}.Encode()
	}
	var out apiv1.RemovedSkills
	return out.Removed, c.do(ctx, http.MethodDelete, path, nil, &out)
}
