package store

import (
	"context"
	"testing"
)

func TestResultCacheSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	var none []string
	if ok, err := s.LoadResultCache(&none); ok || err != nil {
		t.Fatalf("empty store: LoadResultCache = %v, %v; want nothing saved", ok, err)
	}
	if err := s.SaveResultCache(context.Background(), []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	var got []string
	if ok, err := s.LoadResultCache(&got); !ok || err != nil || len(got) != 2 || got[1] != "b" {
		t.Fatalf("after reopen: LoadResultCache = %v, %v, %v; want [a b]", got, ok, err)
	}
}
