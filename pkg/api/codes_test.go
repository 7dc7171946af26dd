package api

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// codeInfo returns the entry of apiv1.Codes for code.
func codeInfo(code string) (apiv1.CodeInfo, bool) {
	i := slices.IndexFunc(apiv1.Codes, func(c apiv1.CodeInfo) bool { return c.Code == code })
	if i < 0 {
		return apiv1.CodeInfo{}, false
	}
	return apiv1.Codes[i], true
}

// codeConstants returns the values of the Code* constants of package
// apiv1, read from its source, so that a new constant cannot be left out
// of apiv1.Codes.
func codeConstants(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	out := map[string]string{}
	files, err := filepath.Glob(filepath.Join("apiv1", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("list apiv1 sources: %v", err)
	}
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, sp := range gd.Specs {
				vs := sp.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Code") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						out[n.Name] = v
					}
				}
			}
		}
	}
	return out
}

func TestEveryErrorCodeIsInTheCodeTable(t *testing.T) {
	consts := codeConstants(t)
	if len(consts) < 10 {
		t.Fatalf("found only %d Code* constants in apiv1: %v", len(consts), consts)
	}
	for name, code := range consts {
		if _, ok := codeInfo(code); !ok {
			t.Errorf("apiv1.%s (%q) is not in apiv1.Codes", name, code)
		}
	}
	for _, c := range apiv1.Codes {
		if !slices.Contains(slices.Collect(maps.Values(consts)), c.Code) {
			t.Errorf("apiv1.Codes lists %q, which no apiv1 constant defines", c.Code)
		}
	}
	// A failed task's error carries the grid's codes as they are named.
	for c := grid.ErrorCode(1); ; c++ {
		if _, ok := grid.ParseErrorCode(c.String()); !ok {
			break
		}
		if _, ok := codeInfo(codeOf(c)); !ok || codeOf(c) != c.String() {
			t.Errorf("grid code %s reaches the API as %q, which is not in apiv1.Codes", c, codeOf(c))
		}
	}
}

func TestErrorStatusesMatchTheCodeTable(t *testing.T) {
	for _, err := range []error{
		badRequest("x"), &http.MaxBytesError{Limit: 1}, inputTooLarge(1), skill.ErrInvalidInput, skill.ErrUnknownSkill,
		skill.ErrTaskNotFound, skill.ErrQueueFull, skill.ErrNoCapableNode, skill.ErrTaskFinished, skill.ErrClosed,
		errDraining, skill.ErrTimeout, skill.ErrCanceled, skill.ErrDelegationFailed, errors.New("anything else"),
		&httpError{http.StatusUnauthorized, apiv1.CodeUnauthorized, "x"},
		ErrSkillExists, ErrNotRemovable, skill.ErrDuplicateSkill, wasm.ErrModuleTooLarge, wasm.ErrNotWasm, wasm.ErrCompile,
		wasm.ErrHashMismatch, wasm.ErrExists, wasm.ErrInvalidManifest, wasm.ErrNotFound, wasm.ErrClosed, moduleTooLarge(2, 1),
	} {
		status, code := errorStatus(err)
		c, ok := codeInfo(code)
		if !ok || c.Status != status {
			t.Errorf("%v is answered %d %s; apiv1.Codes has %+v", err, status, code, c)
		}
	}
}

func TestREADMEDocumentsEveryErrorCode(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range apiv1.Codes {
		status := "task error"
		if c.Status != 0 {
			status = strconv.Itoa(c.Status)
		}
		if row := fmt.Sprintf("| `%s` | %s |", c.Code, status); !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no row %q in its table of error codes", row)
		}
	}
}
