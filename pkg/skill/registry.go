package skill

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	// jsonschema/v6 is the JSON Schema library we check inputs with: it is
	// maintained, passes the official JSON-Schema-Test-Suite for drafts 4
	// through 2020-12, compiles a schema once into an immutable *Schema that
	// is safe for concurrent Validate calls, and reports errors as a tree
	// with instance paths, from which we build a short readable reason.
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Errors returned by Register.
var (
	// ErrInvalidSkillID: the ID is not a lowercase dotted name. It is
	// reputation.ErrInvalidSkillID: the rule lives with the SkillID type.
	ErrInvalidSkillID = reputation.ErrInvalidSkillID
	// ErrInvalidVersion: the version is empty or not semver-like.
	ErrInvalidVersion = errors.New("invalid skill version")
	// ErrInvalidSchema: the input schema is not valid JSON Schema.
	ErrInvalidSchema = errors.New("invalid input schema")
	// ErrDuplicateSkill: a skill with that ID is already registered.
	ErrDuplicateSkill = errors.New("skill already registered")
)

// maxVersionLen is the longest version string, in bytes.
const maxVersionLen = 64

// validateVersion accepts semver-like versions: 1 to 3 dot-separated
// numbers without leading zeros, then optional pre-release ("-rc.1") and
// build ("+git.abc") suffixes of [0-9A-Za-z.-], e.g. "1", "1.2", "1.0.0".
func validateVersion(v string) error {
	const rule = `versions look like "1.0.0" (1 to 3 numbers, optional -pre-release and +build)`
	if v == "" {
		return fmt.Errorf("version is empty (%s): %w", rule, ErrInvalidVersion)
	}
	if len(v) > maxVersionLen {
		return fmt.Errorf("version is %d bytes, more than %d: %w", len(v), maxVersionLen, ErrInvalidVersion)
	}
	core, suffix := v, ""
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		core, suffix = v[:i], v[i:]
	}
	nums := strings.Split(core, ".")
	bad := len(nums) > 3
	for _, n := range nums {
		if n == "" || (len(n) > 1 && n[0] == '0') || strings.Trim(n, "0123456789") != "" {
			bad = true
		}
	}
	for i := 0; i < len(suffix) && !bad; i++ {
		c := suffix[i]
		isSep := c == '-' || c == '+' || c == '.'
		if !(isSep || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			bad = true
		}
	}
	if bad || suffix == "-" || suffix == "+" {
		return fmt.Errorf("version %q (%s): %w", v, rule, ErrInvalidVersion)
	}
	return nil
}

// noLoader refuses to load schemas from files or URLs: a skill's schema
// must be self-contained, and compiling it must never touch the disk or
// the network.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema refers to %q: external references are not allowed", url)
}

// compileSchema compiles a draft 2020-12 schema (the default when it has no
// $schema). An empty or null schema returns nil: anything is accepted.
func compileSchema(id reputation.SkillID, raw []byte) (*jsonschema.Schema, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("input schema of %q is not JSON: %v: %w", id, err, ErrInvalidSchema)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	url := "urn:cortexd:skill:" + string(id)
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("input schema of %q: %v: %w", id, err, ErrInvalidSchema)
	}
	sch, err := c.Compile(url)
	var sve *jsonschema.SchemaValidationError
	switch {
	case errors.As(err, &sve):
		return nil, fmt.Errorf("input schema of %q is not valid JSON Schema: %s: %w", id, schemaReason(sve.Err), ErrInvalidSchema)
	case err != nil:
		return nil, fmt.Errorf("input schema of %q: %v: %w", id, err, ErrInvalidSchema)
	}
	return sch, nil
}

// entry is one registered skill. It is immutable.
type entry struct {
	skill  Skill
	desc   Descriptor
	schema *jsonschema.Schema // nil: any input
	// ctxFree: Execute never blocks and ignores ctx (see contextFree).
	ctxFree bool
}

// contextFree is implemented by skills whose Execute returns quickly
// without blocking and ignores its context. The executor does not build a
// deadline context for them, which keeps their path allocation-free.
type contextFree interface{ contextFree() }

// validate checks in against the entry's schema. Raw inputs are not
// checked here: the skill reads them as it documents.
func (e *entry) validate(in SkillInput) error {
	if e.schema == nil || in.Kind == grid.InputRaw {
		return nil
	}
	if in.Kind != grid.InputJSON {
		return fmt.Errorf("%w for skill %q: input kind %d is neither JSON nor raw", ErrInvalidInput, e.desc.ID, in.Kind)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(in.Data))
	if err != nil {
		return fmt.Errorf("%w for skill %q: input is not valid JSON: %v", ErrInvalidInput, e.desc.ID, err)
	}
	if err := e.schema.Validate(doc); err != nil {
		return fmt.Errorf("%w for skill %q: %s", ErrInvalidInput, e.desc.ID, schemaReason(err))
	}
	return nil
}

var schemaPrinter = message.NewPrinter(language.Und)

// maxReasons is how many schema violations a reason lists.
const maxReasons = 3

// schemaReason turns a validation error into a short reason: the leaf
// violations, each as "<JSON pointer>: <what is wrong>", at most three.
func schemaReason(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var parts []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(parts) > maxReasons {
			return
		}
		if len(e.Causes) == 0 {
			if _, isGroup := e.ErrorKind.(*kind.Schema); !isGroup {
				parts = append(parts, instancePath(e.InstanceLocation)+": "+kindMessage(e.ErrorKind))
			}
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	switch {
	case len(parts) == 0:
		return "does not match the input schema"
	case len(parts) > maxReasons:
		return strings.Join(parts[:maxReasons], "; ") + "; and more"
	}
	return strings.Join(parts, "; ")
}

// instancePath renders a location as a JSON pointer, "(root)" when empty.
func instancePath(loc []string) string {
	if len(loc) == 0 {
		return "(root)"
	}
	var b strings.Builder
	for _, tok := range loc {
		b.WriteByte('/')
		tok = strings.ReplaceAll(tok, "~", "~0")
		b.WriteString(strings.ReplaceAll(tok, "/", "~1"))
	}
	return b.String()
}

// registryState is an immutable snapshot of the registry.
type registryState struct {
	byID   map[reputation.SkillID]*entry
	sorted []Descriptor // by ID
}

var emptyState = &registryState{byID: map[reputation.SkillID]*entry{}}

// Registry holds the skills this node can run, one version per ID. It is
// safe for concurrent use. Lookups read an immutable snapshot through an
// atomic pointer and take no lock; Register and Unregister copy the
// snapshot under a mutex (they are rare).
type Registry struct {
	state atomic.Pointer[registryState]

	mu        sync.Mutex // serializes writers; guards listeners
	listeners []func()
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	r := &Registry{}
	r.state.Store(emptyState)
	return r
}

// Register adds s. It checks the skill's ID (see reputation.SkillID.Validate), that its
// version is semver-like ("1.0.0"), and compiles its input schema (JSON
// Schema, draft 2020-12 unless the schema says otherwise; external $refs
// are refused). It fails with ErrDuplicateSkill if the ID is taken;
// Unregister first to replace a skill.
func (r *Registry) Register(s Skill) error {
	if s == nil {
		return errors.New("register skill: skill is nil")
	}
	d := s.Descriptor()
	if err := d.ID.Validate(); err != nil {
		return fmt.Errorf("register skill: %w", err)
	}
	if err := validateVersion(d.Version); err != nil {
		return fmt.Errorf("register skill %q: %w", d.ID, err)
	}
	sch, err := compileSchema(d.ID, d.InputSchema)
	if err != nil {
		return fmt.Errorf("register skill %q: %w", d.ID, err)
	}
	d.InputSchema = bytes.Clone(d.InputSchema)
	_, ctxFree := s.(contextFree)
	e := &entry{skill: s, desc: d, schema: sch, ctxFree: ctxFree}

	r.mu.Lock()
	old := r.state.Load()
	if prev, ok := old.byID[d.ID]; ok {
		r.mu.Unlock()
		return fmt.Errorf("register skill %q version %q: version %q is registered: %w", d.ID, d.Version, prev.desc.Version, ErrDuplicateSkill)
	}
	next := &registryState{byID: make(map[reputation.SkillID]*entry, len(old.byID)+1)}
	for k, v := range old.byID {
		next.byID[k] = v
	}
	next.byID[d.ID] = e
	next.sorted = sortedDescriptors(next.byID)
	r.state.Store(next)
	fns := r.listeners
	r.mu.Unlock()
	notify(fns)
	return nil
}

// Unregister removes the skill with that ID and reports whether it was
// registered.
func (r *Registry) Unregister(id reputation.SkillID) bool {
	r.mu.Lock()
	old := r.state.Load()
	if _, ok := old.byID[id]; !ok {
		r.mu.Unlock()
		return false
	}
	next := &registryState{byID: make(map[reputation.SkillID]*entry, len(old.byID))}
	for k, v := range old.byID {
		if k != id {
			next.byID[k] = v
		}
	}
	next.sorted = sortedDescriptors(next.byID)
	r.state.Store(next)
	fns := r.listeners
	r.mu.Unlock()
	notify(fns)
	return true
}

func sortedDescriptors(m map[reputation.SkillID]*entry) []Descriptor {
	ds := make([]Descriptor, 0, len(m))
	for _, e := range m {
		ds = append(ds, e.desc)
	}
	slices.SortFunc(ds, func(a, b Descriptor) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return ds
}

func notify(fns []func()) {
	for _, fn := range fns {
		fn()
	}
}

// lookup returns the entry for id, which must have the given version
// unless version is empty. It does not allocate when the skill is found.
// find returns the entry of skill id at version (any version if empty),
// or nil; unlike lookup it does not allocate an error on a miss, for the
// hot path of a task whose skill this node does not have.
func (r *Registry) find(id reputation.SkillID, version string) *entry {
	e, ok := r.state.Load().byID[id]
	if !ok || (version != "" && version != e.desc.Version) {
		return nil
	}
	return e
}

func (r *Registry) lookup(id reputation.SkillID, version string) (*entry, error) {
	e, ok := r.state.Load().byID[id]
	if !ok {
		if version == "" {
			return nil, fmt.Errorf("skill %q is not registered on this node: %w", id, ErrUnknownSkill)
		}
		return nil, fmt.Errorf("skill %q version %q is not registered on this node: %w", id, version, ErrUnknownSkill)
	}
	if version != "" && version != e.desc.Version {
		return nil, fmt.Errorf("skill %q version %q is not registered on this node (it has version %q): %w", id, version, e.desc.Version, ErrUnknownSkill)
	}
	return e, nil
}

// Lookup returns the skill with that ID. An empty version matches any
// version; otherwise the version must be equal. The error wraps
// ErrUnknownSkill and names the ID and version.
func (r *Registry) Lookup(id reputation.SkillID, version string) (Skill, error) {
	e, err := r.lookup(id, version)
	if err != nil {
		return nil, err
	}
	return e.skill, nil
}

// Validate checks in against the input schema of the skill. It returns an
// error wrapping ErrUnknownSkill if there is no such skill, or one wrapping
// ErrInvalidInput whose message says which field is wrong and how. Raw
// inputs and skills without a schema pass; the skill checks them itself.
func (r *Registry) Validate(id reputation.SkillID, version string, in SkillInput) error {
	e, err := r.lookup(id, version)
	if err != nil {
		return err
	}
	return e.validate(in)
}

// List returns the descriptors of every registered skill, sorted by ID.
// The caller owns the returned slice.
func (r *Registry) List() []Descriptor {
	ds := slices.Clone(r.state.Load().sorted)
	for i := range ds {
		ds[i].InputSchema = bytes.Clone(ds[i].InputSchema)
	}
	return ds
}

// Has reports whether a skill with that ID is registered.
func (r *Registry) Has(id reputation.SkillID) bool {
	_, ok := r.state.Load().byID[id]
	return ok
}

// OnChange adds fn to the functions called after each successful Register
// or Unregister, in the order they were added. They are called without any
// registry lock held, so fn may call the registry; concurrent changes may
// call fn concurrently, so fn must be safe for that and should be quick
// (the network layer re-announces capabilities from it).
func (r *Registry) OnChange(fn func()) {
	if fn == nil {
		return
	}
	r.mu.Lock()
	r.listeners = append(slices.Clip(r.listeners), fn)
	r.mu.Unlock()
}

// kindMessage says what a schema violation is, numbers in plain digits:
// the library prints them through x/text, as 1×10⁰⁸ and 4,096.
func kindMessage(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Minimum:
		return fmt.Sprintf("must be at least %s, not %s", ratString(k.Want), ratString(k.Got))
	case *kind.Maximum:
		return fmt.Sprintf("must be at most %s, not %s", ratString(k.Want), ratString(k.Got))
	case *kind.ExclusiveMinimum:
		return fmt.Sprintf("must be more than %s, not %s", ratString(k.Want), ratString(k.Got))
	case *kind.ExclusiveMaximum:
		return fmt.Sprintf("must be less than %s, not %s", ratString(k.Want), ratString(k.Got))
	case *kind.MultipleOf:
		return fmt.Sprintf("must be a multiple of %s, not %s", ratString(k.Want), ratString(k.Got))
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %d characters long, not %d", k.Want, k.Got)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %d characters long, not %d", k.Want, k.Got)
	case *kind.MinItems:
		return fmt.Sprintf("must have at least %d items, not %d", k.Want, k.Got)
	case *kind.MaxItems:
		return fmt.Sprintf("must have at most %d items, not %d", k.Want, k.Got)
	}
	return k.LocalizedString(schemaPrinter)
}

// ratString writes r in plain digits: an integer as one, else the nearest
// float64 without an exponent.
func ratString(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'f', -1, 64)
}
