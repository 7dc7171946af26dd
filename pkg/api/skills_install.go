package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// Errors a SkillInstaller wraps, which the API answers with their codes.
var (
	// ErrSkillExists: the name is a built-in skill's or is registered
	// (409 skill_exists).
	ErrSkillExists = errors.New("skill name taken")
	// ErrNotRemovable: the skill is built in or a command skill, which
	// only the config sets (409 skill_not_removable).
	ErrNotRemovable = errors.New("skill not removable")
)

// SkillInfo is how this node implements one of its skills.
type SkillInfo struct {
	// Kind is apiv1.SkillBuiltin, SkillWasm or SkillCommand.
	Kind string
	// Manifest and Limits are a wasm skill's manifest and the limits each
	// run gets (the manifest's, defaulted and capped by the node).
	Manifest wasm.Manifest
	Limits   wasm.Limits
}

// SkillInstaller adds and removes wasm skills while the node runs, for
// POST and DELETE /v1/skills, and says how each local skill is
// implemented, for GET /v1/skills. The daemon implements it; it must be
// safe for concurrent use.
type SkillInstaller interface {
	// MaxModule is the largest module accepted, in bytes: the body limit
	// of POST /v1/skills (in place of WithMaxBodyBytes).
	MaxModule() int64
	// Install checks module against m (m.Module is its sha256), compiles
	// it, stores both and registers the skill at once; nothing is stored
	// if any step fails. Errors wrap ErrSkillExists, wasm.ErrModuleTooLarge,
	// wasm.ErrNotWasm, wasm.ErrCompile or wasm.ErrInvalidManifest.
	Install(ctx context.Context, m wasm.Manifest, module []byte) (SkillInfo, error)
	// Remove unregisters the wasm skill name (if version is empty or its
	// registered version) and deletes its stored manifests at version
	// (every version if empty) with the modules no other manifest uses.
	// Tasks already running finish. Errors wrap ErrNotRemovable or
	// wasm.ErrNotFound.
	Remove(ctx context.Context, name reputation.SkillID, version string) ([]SkillInfo, error)
	// Describe says how the registered skill id is implemented; ok is
	// false if it is not registered.
	Describe(id reputation.SkillID) (info SkillInfo, ok bool)
}

// installStatus maps the errors of a SkillInstaller to a status and code;
// ok is false for an error it does not know.
func installStatus(err error) (status int, code string, ok bool) {
	switch {
	case errors.Is(err, ErrSkillExists), errors.Is(err, wasm.ErrExists):
		return http.StatusConflict, apiv1.CodeSkillExists, true
	case errors.Is(err, ErrNotRemovable):
		return http.StatusConflict, apiv1.CodeNotRemovable, true
	case errors.Is(err, wasm.ErrModuleTooLarge):
		return http.StatusRequestEntityTooLarge, apiv1.CodeModuleTooLarge, true
	case errors.Is(err, wasm.ErrNotWasm), errors.Is(err, wasm.ErrCompile), errors.Is(err, wasm.ErrHashMismatch):
		return http.StatusUnprocessableEntity, apiv1.CodeInvalidModule, true
	case errors.Is(err, wasm.ErrInvalidManifest):
		return http.StatusBadRequest, apiv1.CodeInvalidRequest, true
	case errors.Is(err, wasm.ErrNotFound):
		return http.StatusNotFound, apiv1.CodeNotFound, true
	case errors.Is(err, wasm.ErrClosed):
		return http.StatusServiceUnavailable, apiv1.CodeShuttingDown, true
	}
	return 0, "", false
}

// installSkill serves POST /v1/skills: the body is the module
// (Content-Type application/wasm), the query the manifest's fields.
func (s *Server) installSkill(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.writeError(w, r, errDraining)
		return
	}
	inst := s.deps.Installer
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != apiv1.WasmMediaType {
		s.writeError(w, r, &httpError{http.StatusUnsupportedMediaType, apiv1.CodeUnsupportedType,
			fmt.Sprintf("POST /v1/skills takes the module's bytes as %s, not %q; the manifest's fields go in the query (%s)",
				apiv1.WasmMediaType, r.Header.Get("Content-Type"), strings.Join(apiv1.SkillParams, ", "))})
		return
	}
	m, err := manifestQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limit := inst.MaxModule()
	if r.ContentLength > limit {
		s.writeError(w, r, moduleTooLarge(r.ContentLength, limit))
		return
	}
	module, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		s.writeError(w, r, moduleTooLarge(-1, limit))
		return
	case err != nil:
		s.writeError(w, r, badRequest("read the module: %v", err))
		return
	case len(module) == 0:
		s.writeError(w, r, &httpError{http.StatusUnprocessableEntity, apiv1.CodeInvalidModule,
			"the body is empty: send the .wasm file's bytes (curl --data-binary @FILE.wasm)"})
		return
	}
	m.Module = wasm.ModuleIDOf(module)
	if err := m.Validate(); err != nil {
		s.writeError(w, r, err)
		return
	}
	info, err := inst.Install(r.Context(), m, module)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := s.skillOf(info)
	out.Local, out.Providers = true, []string{s.deps.Node.ID().String()}
	writeJSON(w, http.StatusCreated, out)
}

func moduleTooLarge(n, limit int64) error {
	size := "larger than"
	if n >= 0 {
		size = fmt.Sprintf("%d bytes, over", n)
	}
	return &httpError{http.StatusRequestEntityTooLarge, apiv1.CodeModuleTooLarge,
		fmt.Sprintf("the module is %s this node's limit of %s (%d bytes, wasm.max_module)", size, wasm.Size(limit), limit)}
}

// manifestQuery reads the manifest's fields from the query of POST
// /v1/skills; the caller sets the module hash.
func manifestQuery(q url.Values) (wasm.Manifest, error) {
	for k, vs := range q {
		if !slices.Contains(apiv1.SkillParams, k) {
			return wasm.Manifest{}, badRequest("unknown parameter %.40q: POST /v1/skills takes %s", k, strings.Join(apiv1.SkillParams, ", "))
		}
		if len(vs) > 1 {
			return wasm.Manifest{}, badRequest("parameter %q is given %d times: give it once", k, len(vs))
		}
	}
	m := wasm.Manifest{Name: reputation.SkillID(q.Get(apiv1.ParamName)), Version: q.Get(apiv1.ParamVersion),
		Description: q.Get(apiv1.ParamDescription)}
	if m.Name == "" || m.Version == "" {
		return m, badRequest("parameters name and version are required: POST /v1/skills?name=text.upper&version=1.0.0")
	}
	if v := q.Get(apiv1.ParamInputSchema); v != "" {
		if !json.Valid([]byte(v)) {
			return m, badRequest("parameter input_schema is not JSON")
		}
		m.InputSchema = json.RawMessage(v)
	}
	for _, f := range []struct {
		name string
		dst  *wasm.Size
	}{{apiv1.ParamMemory, &m.Limits.Memory}, {apiv1.ParamInput, &m.Limits.Input}, {apiv1.ParamOutput, &m.Limits.Output}} {
		v := q.Get(f.name)
		if v == "" {
			continue
		}
		n, err := wasm.ParseSize(v)
		if err != nil {
			return m, badRequest("parameter %s: %v", f.name, err)
		}
		*f.dst = n
	}
	d, err := durationParam(q, apiv1.ParamTimeout)
	if err != nil {
		return m, err
	}
	m.Limits.Timeout = wasm.Duration(d)
	if v := q.Get(apiv1.ParamDeterministic); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return m, badRequest("parameter deterministic must be true or false, not %.40q", v)
		}
		m.Deterministic = b
	}
	return m, nil
}

// removeSkill serves DELETE /v1/skills/{name}[?version=V].
func (s *Server) removeSkill(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != apiv1.ParamVersion {
			s.writeError(w, r, badRequest("unknown parameter %.40q: DELETE /v1/skills/{name} takes only version", k))
			return
		}
	}
	name := reputation.SkillID(r.PathValue("name"))
	if err := name.Validate(); err != nil {
		s.writeError(w, r, badRequest("%v", err))
		return
	}
	gone, err := s.deps.Installer.Remove(r.Context(), name, q.Get(apiv1.ParamVersion))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := apiv1.RemovedSkills{Removed: make([]apiv1.Skill, 0, len(gone))}
	for _, g := range gone {
		out.Removed = append(out.Removed, s.skillOf(g))
	}
	writeJSON(w, http.StatusOK, out)
}

// skillOf is the list entry of an installed wasm skill.
func (s *Server) skillOf(info SkillInfo) apiv1.Skill {
	m := info.Manifest
	out := apiv1.Skill{ID: string(m.Name), Version: m.Version, Description: m.Description, Providers: []string{},
		InputSchema: m.InputSchema}
	describeInto(&out, info)
	return out
}

// describeInto sets sk's kind and, for a wasm skill, its module, limits
// and determinism.
func describeInto(sk *apiv1.Skill, info SkillInfo) {
	sk.Kind = info.Kind
	if info.Kind != apiv1.SkillWasm {
		return
	}
	sk.Module = info.Manifest.Module.String()
	sk.Deterministic = info.Manifest.Deterministic
	l := info.Limits
	sk.Limits = &apiv1.SkillLimits{Memory: l.Memory.String(), Timeout: l.Timeout.String(), Input: l.Input.String(), Output: l.Output.String()}
}
