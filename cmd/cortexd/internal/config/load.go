package config

import (
	"bytes"
	_ "embed" // the commented default config
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// FileName is the config file's name inside the repo dir.
const FileName = "config.yaml"

// EnvPrefix prefixes every environment variable that sets a key.
const EnvPrefix = "CORTEXD"

// Template is the commented config.yaml that `cortexd init` writes. It sets
// every key to its default and says what each one does; configs/cortexd.yaml
// in the source tree is a copy of it.
//
//go:embed cortexd.yaml
var Template []byte

// ErrInvalid is wrapped by every error Load and Validate return for a bad
// key or value.
var ErrInvalid = errors.New("invalid configuration")

// Problems is a list of configuration problems, each naming its key.
type Problems []string

func (p Problems) Error() string {
	if len(p) == 1 {
		return "invalid configuration: " + p[0]
	}
	return "invalid configuration:\n  " + strings.Join(p, "\n  ")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (p Problems) Unwrap() error { return ErrInvalid }

// Keys returns every key of the schema, sorted, e.g. "queue.max_per_level".
func Keys() []string {
	var keys []string
	walk(reflect.TypeOf(Config{}), "", func(key string, _ reflect.Type) { keys = append(keys, key) })
	sort.Strings(keys)
	return keys
}

// EnvVar returns the environment variable that sets key.
func EnvVar(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func walk(t reflect.Type, prefix string, leaf func(key string, t reflect.Type)) {
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("mapstructure")
		if prefix != "" {
			key = prefix + "." + key
		}
		if f.Type.Kind() == reflect.Struct {
			walk(f.Type, key, leaf)
			continue
		}
		leaf(key, f.Type)
	}
}

// Load reads the config file at path (required unless path is empty), then
// the CORTEXD_* environment variables, then the flags in bind (config key to
// flag; only flags the user set count). It rejects unknown keys and invalid
// values with an error that names each key, wrapping ErrInvalid.
func Load(path string, bind map[string]*pflag.Flag) (*Config, error) {
	v := viper.New()
	def := Default()
	if err := setDefaults(v, def); err != nil {
		return nil, err
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if err := checkMovedEnv(); err != nil {
		return nil, err
	}
	for key, f := range bind {
		if f == nil {
			return nil, fmt.Errorf("bind flag for %s: no such flag", key)
		}
		if err := v.BindPFlag(key, f); err != nil {
			return nil, fmt.Errorf("bind flag --%s to %s: %w", f.Name, key, err)
		}
	}
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := checkFileKeys(path, raw); err != nil {
			return nil, err
		}
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(raw)); err != nil {
			return nil, fmt.Errorf("parse config %s: %w: %w", path, ErrInvalid, err)
		}
	}
	var c Config
	if err := v.UnmarshalExact(&c, decodeOptions); err != nil {
		return nil, decodeProblems(v, path, err)
	}
	if err := c.Validate(); err != nil {
		if path != "" {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, err
	}
	return &c, nil
}

// checkMovedEnv refuses the environment variables of moved keys.
func checkMovedEnv() error {
	var p Problems
	for old := range movedKeys {
		if _, ok := os.LookupEnv(EnvVar(old)); ok {
			p = append(p, movedProblem(old, "$"+EnvVar(old))+" (set $"+EnvVar(movedKeys[old])+")")
		}
	}
	if p == nil {
		return nil
	}
	sort.Strings(p)
	return p
}

// decodeOptions makes decoding strict about types (a number where a string
// is expected is an error) while still reading the strings that environment
// variables and flags give.
func decodeOptions(dc *mapstructure.DecoderConfig) {
	dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		stringToSize,
		stringToSlice,
	)
}

// stringToSize reads a size with a unit ("64MiB") or a number of bytes
// as a string, as YAML, the environment and flags give it.
func stringToSize(f, t reflect.Type, data any) (any, error) {
	if f.Kind() != reflect.String || t != reflect.TypeOf(wasm.Size(0)) {
		return data, nil
	}
	return wasm.ParseSize(data.(string))
}

// stringToSlice splits "a,b" into a list, for lists set from the
// environment or a flag.
func stringToSlice(f, t reflect.Type, data any) (any, error) {
	if f.Kind() != reflect.String || t.Kind() != reflect.Slice {
		return data, nil
	}
	s := strings.TrimSpace(data.(string))
	if s == "" {
		return []string{}, nil
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts, nil
}

func setDefaults(v *viper.Viper, def Config) error {
	var m map[string]any
	if err := mapstructure.Decode(def, &m); err != nil {
		return fmt.Errorf("encode default config: %w", err)
	}
	var set func(prefix string, m map[string]any)
	set = func(prefix string, m map[string]any) {
		for k, val := range m {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			if sub, ok := val.(map[string]any); ok {
				set(key, sub)
				continue
			}
			v.SetDefault(key, val)
		}
	}
	set("", m)
	return nil
}

// checkFileKeys reports every key in the YAML file that the schema does not
// have, by its full dotted name.
func checkFileKeys(path string, raw []byte) error {
	fv := viper.New()
	fv.SetConfigType("yaml")
	if err := fv.ReadConfig(bytes.NewReader(raw)); err != nil {
		return fmt.Errorf("parse config %s: %w: %w", path, ErrInvalid, err)
	}
	known := Keys()
	var p Problems
	for _, k := range fv.AllKeys() {
		if _, moved := movedKeys[k]; moved {
			p = append(p, movedProblem(k, path))
			continue
		}
		if !slices.Contains(known, k) {
			p = append(p, fmt.Sprintf("%s: unknown key%s", k, suggest(k, known)))
		}
	}
	if p != nil {
		return fmt.Errorf("%s: %w", path, p)
	}
	return nil
}

// suggest names the known key closest to k, if one is close.
func suggest(k string, known []string) string {
	best, bestD := "", 4
	for _, c := range known {
		if d := distance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" {
		return " (see configs/cortexd.yaml for every key)"
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// decodeProblems turns mapstructure's errors into one problem per key.
func decodeProblems(v *viper.Viper, path string, err error) error {
	types := map[string]reflect.Type{}
	walk(reflect.TypeOf(Config{}), "", func(key string, t reflect.Type) { types[key] = t })
	var p Problems
	var de *mapstructure.DecodeError
	for _, e := range flatten(err) {
		if !errors.As(e, &de) {
			p = append(p, e.Error())
			continue
		}
		msg := cleanDecodeMsg(de.Unwrap())
		if rest, ok := strings.CutPrefix(msg, "has invalid keys: "); ok {
			for _, k := range strings.Split(rest, ", ") {
				if de.Name() != "" {
					k = de.Name() + "." + k
				}
				p = append(p, k+": unknown key")
			}
			continue
		}
		if t, ok := types[de.Name()]; ok {
			msg = fmt.Sprintf("want %s, got %q", describe(t), fmt.Sprint(v.Get(de.Name())))
		}
		p = append(p, fmt.Sprintf("%s: %s (set by %s)", de.Name(), msg, source(path, de.Name())))
	}
	if len(p) == 0 {
		return fmt.Errorf("decode config: %w: %w", ErrInvalid, err)
	}
	sort.Strings(p)
	return p
}

// describe names a schema type for people.
func describe(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "a duration such as 30s, 5m or 1h"
	case t == reflect.TypeOf(wasm.Size(0)):
		return "a size such as 64MiB, 512KiB or 1048576 (bytes)"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice:
		return "a list"
	}
	return "a " + t.Kind().String()
}

func cleanDecodeMsg(err error) string {
	if err == nil {
		return "invalid value"
	}
	msg := err.Error()
	msg = strings.ReplaceAll(msg, "strconv.ParseInt: ", "")
	msg = strings.ReplaceAll(msg, "strconv.ParseFloat: ", "")
	msg = strings.ReplaceAll(msg, "strconv.ParseBool: ", "")
	msg = strings.ReplaceAll(msg, "time: ", "")
	return msg
}

// source says where a key's value came from, for error messages.
func source(path, key string) string {
	if _, ok := os.LookupEnv(EnvVar(key)); ok {
		return "$" + EnvVar(key)
	}
	if path == "" {
		return "flag or default"
	}
	return path + " or a flag"
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// nonConfigEnv are CORTEXD_* variables that are not config keys but mean
// something to cortexd or its tooling.
var nonConfigEnv = []string{"CORTEXD_PATH"}

// UnknownEnv returns a note for each CORTEXD_* variable in environ (as
// os.Environ gives it) that sets no config key, such as a misspelt one,
// naming the closest key's variable when one is close.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	var vars []string
	for _, k := range Keys() {
		known[EnvVar(k)] = true
		vars = append(vars, EnvVar(k))
	}
	for k := range movedKeys {
		known[EnvVar(k)] = true // Load refuses it, naming the new key
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix+"_") || known[name] || slices.Contains(nonConfigEnv, name) {
			continue
		}
		note := name + " sets no config key"
		if s := suggest(name, vars); strings.HasPrefix(s, " (did you mean") {
			note += s
		}
		out = append(out, note)
	}
	sort.Strings(out)
	return out
}
