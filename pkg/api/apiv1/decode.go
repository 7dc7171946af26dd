package apiv1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// FieldError is a value of a request that cannot be read: Field names it
// as the request spells it ("priority", "retry.base_backoff"), Problem
// says what is wrong and what is wanted.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%q %s", e.Field, e.Problem) }

// fieldError names the field of an error from decoding its value.
func fieldError(field string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		if fe.Field == "" {
			return &FieldError{Field: field, Problem: fe.Problem}
		}
		return &FieldError{Field: field + "." + fe.Field, Problem: fe.Problem}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &FieldError{Field: field, Problem: fmt.Sprintf("must be %s, not %s", kindName(te.Type), article(te.Value))}
	}
	return &FieldError{Field: field, Problem: err.Error()}
}

// problem is a FieldError whose field the caller names.
func problem(format string, args ...any) error {
	// A problem may quote the client's bytes, which need not be UTF-8.
	return &FieldError{Problem: strings.ToValidUTF8(fmt.Sprintf(format, args...), "\uFFFD")}
}

func kindName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return "an object"
}

// article turns a JSON kind as UnmarshalTypeError names it ("number",
// "string", "number 1.5") into one for a sentence.
func article(v string) string {
	switch {
	case v == "array":
		return "a list"
	case v == "object":
		return "an object"
	case v == "bool":
		return "true or false"
	case strings.HasPrefix(v, "number "):
		return v[len("number "):]
	}
	return "a " + v
}

// jsonKind names the kind of the JSON value b: "a list", "a string", ...
func jsonKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '[':
		return "a list"
	case '{':
		return "an object"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "true or false"
	}
	return "a number"
}

// decodeStrict reads one JSON object from b into v, refusing unknown
// fields, and says which field is unknown.
func decodeStrict(b []byte, v any, fields string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			name = strings.Trim(name, `"`)
			if r := []rune(name); len(r) > 40 {
				name = string(r[:40]) + "…"
			}
			return &FieldError{Field: name, Problem: "is not a field: the fields are " + fields}
		}
		return err
	}
	return nil
}

// submitFields lists the fields of a SubmitRequest, for errors.
const submitFields = "skill, version, input, input_base64, priority, timeout, min_trust, max_retries, retry, no_cache, input_from"

// UnmarshalJSON reads a submission, naming the field of a value it cannot
// read (`"priority" must be ...`) and refusing unknown fields.
func (r *SubmitRequest) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("the body must be a JSON object such as {\"skill\":\"echo\"}, not %s", jsonKind(b))
	}
	var raw struct {
		Skill       json.RawMessage `json:"skill"`
		Version     json.RawMessage `json:"version"`
		Input       json.RawMessage `json:"input"`
		InputBase64 json.RawMessage `json:"input_base64"`
		Priority    json.RawMessage `json:"priority"`
		Timeout     json.RawMessage `json:"timeout"`
		MinTrust    json.RawMessage `json:"min_trust"`
		MaxRetries  json.RawMessage `json:"max_retries"`
		Retry       json.RawMessage `json:"retry"`
		NoCache     json.RawMessage `json:"no_cache"`
		InputFrom   json.RawMessage `json:"input_from"`
	}
	if err := decodeStrict(b, &raw, submitFields); err != nil {
		return err
	}
	var out SubmitRequest
	if err := decodeFields([]rawField{
		{"skill", raw.Skill, &out.Skill},
		{"version", raw.Version, &out.Version},
		{"input", raw.Input, &out.Input},
		{"input_base64", raw.InputBase64, &out.InputBase64},
		{"priority", raw.Priority, &out.Priority},
		{"timeout", raw.Timeout, &out.Timeout},
		{"min_trust", raw.MinTrust, &out.MinTrust},
		{"max_retries", raw.MaxRetries, &out.MaxRetries},
		{"retry", raw.Retry, &out.Retry},
		{"no_cache", raw.NoCache, &out.NoCache},
		{"input_from", raw.InputFrom, &out.InputFrom},
	}); err != nil {
		return err
	}
	*r = out
	return nil
}

// rawField is one field of a JSON object read strictly: its name, its
// raw value (nil if absent) and where to decode it.
type rawField struct {
	name string
	raw  json.RawMessage
	v    any
}

// decodeFields decodes each present field, naming the first that fails.
func decodeFields(fs []rawField) error {
	for _, f := range fs {
		if f.raw == nil {
			continue
		}
		if err := json.Unmarshal(f.raw, f.v); err != nil {
			if f.name == "input_base64" && !errors.As(err, new(*json.UnmarshalTypeError)) {
				err = problem("is not base64 (standard alphabet, with padding): %v", err)
			}
			return fieldError(f.name, err)
		}
	}
	return nil
}

// retryFields lists the fields of a RetryPolicy, for errors.
const retryFields = "max_attempts, base_backoff, max_backoff, retry_on"

// UnmarshalJSON reads a retry policy, naming the field of a value it cannot
// read and refusing unknown fields.
func (p *RetryPolicy) UnmarshalJSON(b []byte) error {
	var raw struct {
		MaxAttempts json.RawMessage `json:"max_attempts"`
		BaseBackoff json.RawMessage `json:"base_backoff"`
		MaxBackoff  json.RawMessage `json:"max_backoff"`
		RetryOn     json.RawMessage `json:"retry_on"`
	}
	if len(b) == 0 || b[0] != '{' {
		return problem("must be an object such as {\"max_attempts\": 3}, not %s", jsonKind(b))
	}
	if err := decodeStrict(b, &raw, retryFields); err != nil {
		return err
	}
	var out RetryPolicy
	if err := decodeFields([]rawField{
		{"max_attempts", raw.MaxAttempts, &out.MaxAttempts},
		{"base_backoff", raw.BaseBackoff, &out.BaseBackoff},
		{"max_backoff", raw.MaxBackoff, &out.MaxBackoff},
		{"retry_on", raw.RetryOn, &out.RetryOn},
	}); err != nil {
		return err
	}
	*p = out
	return nil
}

// PriorityNames are the level names a priority may be given as, highest
// first.
var PriorityNames = []string{"critical", "high", "normal", "low"}

// UnmarshalJSON accepts a number 0-255 or a level name.
func (p *Priority) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	v, err := ParsePriority(s)
	if err != nil {
		return problem("must be 0-255 or a level name (%s), not %.40s", strings.Join(PriorityNames, ", "), b)
	}
	*p = v
	return nil
}

// Duration is a time.Duration that is a duration string with a unit in
// JSON ("60s", "1m30s"). A bare number is refused: it has no unit.
type Duration time.Duration

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string such as "60s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '"' {
		if _, err := strconv.ParseFloat(string(b), 64); err == nil {
			return problem("must be a duration string with a unit, such as \"30s\" or \"5m\", not the bare number %.20s", b)
		}
		return problem("must be a duration string with a unit, such as \"30s\" or \"5m\", not %.20s", b)
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return problem("%.40q is not a duration: want one such as \"30s\", \"5m\" or \"1h30m\"", s)
	}
	*d = Duration(v)
	return nil
}
