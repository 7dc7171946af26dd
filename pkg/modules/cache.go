package modules

import (
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// DefaultCacheBytes is the default byte budget of a Cache.
const DefaultCacheBytes = 512 << 20

// ErrTooLarge is returned by Cache.Put for a module over the cache's
// whole budget.
var ErrTooLarge = errors.New("module larger than the module cache")

// Cache keeps fetched modules and their manifests on disk, under one
// directory apart from the operator's wasm.Store, within a byte budget
// (module bytes; manifests are small and not counted): putting one that
// does not fit removes the least recently used first. Use (Get, Module)
// marks an entry as recently used; the order survives a restart through
// the files' modification times. It is safe for concurrent use.
type Cache struct {
	dir      string
	maxBytes int64

	mu    sync.Mutex
	lru   *list.List // of *cacheEntry, most recently used first
	byID  map[wasm.ModuleID]*list.Element
	bytes int64
}

type cacheEntry struct {
	id   wasm.ModuleID
	size int64
}

// OpenCache opens (creating it) the cache in dir with a budget of
// maxBytes (DefaultCacheBytes if <= 0). Entries without both files, or
// left by an interrupted write, are removed.
func OpenCache(dir string, maxBytes int64) (*Cache, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultCacheBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open module cache: %w", err)
	}
	c := &Cache{dir: dir, maxBytes: maxBytes, lru: list.New(), byID: map[wasm.ModuleID]*list.Element{}}
	if err := c.scan(); err != nil {
		return nil, fmt.Errorf("open module cache %s: %w", dir, err)
	}
	return c, nil
}

func (c *Cache) scan() error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	type found struct {
		id   wasm.ModuleID
		size int64
		used time.Time
	}
	var all []found
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			_ = os.Remove(filepath.Join(c.dir, name))
			continue
		}
		hexID, ok := strings.CutSuffix(name, ".wasm")
		if !ok {
			continue
		}
		id, err := wasm.ParseModuleID(hexID)
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if _, err := os.Stat(c.manifestPath(id)); err != nil {
			_ = os.Remove(c.modulePath(id))
			continue
		}
		all = append(all, found{id, info.Size(), info.ModTime()})
	}
	slices.SortFunc(all, func(a, b found) int { return b.used.Compare(a.used) })
	for _, f := range all {
		c.byID[f.id] = c.lru.PushBack(&cacheEntry{id: f.id, size: f.size})
		c.bytes += f.size
	}
	c.evictLocked(0)
	return nil
}

func (c *Cache) modulePath(id wasm.ModuleID) string {
	return filepath.Join(c.dir, id.String()+".wasm")
}

func (c *Cache) manifestPath(id wasm.ModuleID) string {
	return filepath.Join(c.dir, id.String()+".json")
}

// Put stores a verified module (its sha256 must be m.Module) and its
// manifest, evicting the least recently used entries until it fits.
func (c *Cache) Put(m wasm.Manifest, module []byte) error {
	id := wasm.ModuleIDOf(module)
	if id != m.Module {
		return fmt.Errorf("cache module: sha256 %s, manifest says %s: %w", id.Short(), m.Module.Short(), wasm.ErrHashMismatch)
	}
	if int64(len(module)) > c.maxBytes {
		return fmt.Errorf("cache module %s: %d bytes, the cache holds %d: %w", id.Short(), len(module), c.maxBytes, ErrTooLarge)
	}
	man, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("cache module %s: %w", id.Short(), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		c.lru.MoveToFront(el)
		return nil
	}
	c.evictLocked(int64(len(module)))
	if err := writeFile(c.dir, c.manifestPath(id), man); err != nil {
		return fmt.Errorf("cache module %s: %w", id.Short(), err)
	}
	if err := writeFile(c.dir, c.modulePath(id), module); err != nil {
		_ = os.Remove(c.manifestPath(id))
		return fmt.Errorf("cache module %s: %w", id.Short(), err)
	}
	c.byID[id] = c.lru.PushFront(&cacheEntry{id: id, size: int64(len(module))})
	c.bytes += int64(len(module))
	return nil
}

// evictLocked removes least recently used entries until room more bytes
// fit in the budget.
func (c *Cache) evictLocked(room int64) {
	for c.bytes+room > c.maxBytes && c.lru.Len() > 0 {
		e := c.lru.Remove(c.lru.Back()).(*cacheEntry)
		delete(c.byID, e.id)
		c.bytes -= e.size
		_ = os.Remove(c.modulePath(e.id))
		_ = os.Remove(c.manifestPath(e.id))
	}
}

// Get returns a cached module and its manifest, checked again against
// its hash (a changed file is removed and reported as ErrHashMismatch),
// and marks it used. A module not cached is wasm.ErrNotFound.
func (c *Cache) Get(id wasm.ModuleID) (wasm.Manifest, []byte, error) {
	man, mod, err := c.read(id)
	if err != nil {
		return wasm.Manifest{}, nil, err
	}
	m, _, err := verify(id, man, mod)
	if err != nil {
		c.remove(id)
		return wasm.Manifest{}, nil, fmt.Errorf("cached module %s: %w", id.Short(), err)
	}
	return m, mod, nil
}

// Module serves a cached module (see Source).
func (c *Cache) Module(id wasm.ModuleID) ([]byte, []byte, bool) {
	man, mod, err := c.read(id)
	if err != nil || wasm.ModuleIDOf(mod) != id {
		return nil, nil, false
	}
	return man, mod, true
}

func (c *Cache) read(id wasm.ModuleID) ([]byte, []byte, error) {
	c.mu.Lock()
	el, ok := c.byID[id]
	if ok {
		c.lru.MoveToFront(el)
	}
	c.mu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("cached module %s: %w", id.Short(), wasm.ErrNotFound)
	}
	now := time.Now()
	_ = os.Chtimes(c.modulePath(id), now, now)
	man, err := os.ReadFile(c.manifestPath(id))
	if err != nil {
		return nil, nil, fmt.Errorf("read cached manifest %s: %w", id.Short(), err)
	}
	mod, err := os.ReadFile(c.modulePath(id))
	if err != nil {
		return nil, nil, fmt.Errorf("read cached module %s: %w", id.Short(), err)
	}
	return man, mod, nil
}

func (c *Cache) remove(id wasm.ModuleID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		e := c.lru.Remove(el).(*cacheEntry)
		delete(c.byID, id)
		c.bytes -= e.size
	}
	_ = os.Remove(c.modulePath(id))
	_ = os.Remove(c.manifestPath(id))
}

// Has reports whether id is cached, without marking it used.
func (c *Cache) Has(id wasm.ModuleID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.byID[id]
	return ok
}

// Bytes returns the module bytes cached, and Len the number of modules.
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Len returns the number of modules cached.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// writeFile writes b to path through a temporary file in dir renamed
// into place, so a crash leaves no half-written entry (scan removes
// leftovers). It does not sync: a cached module is checked on every read.
func writeFile(dir, path string, b []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}
