package api_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

func TestCollectorCountsCacheHitsAndMisses(t *testing.T) {
	e := newEngine(t)
	rc, err := skill.NewResultCache(skill.CacheConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e.Coordinator.UseResultCache(rc)
	t.Cleanup(func() { e.Coordinator.UseResultCache(nil) })
	ctx := context.Background()
	for range 3 {
		id, err := e.Coordinator.SubmitTask(ctx, skill.NewSkillTask("echo", skill.RawInput([]byte("x")), ""))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Coordinator.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(api.NewCollector(e.Coordinator, e.Node, e.Trust))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "cortex_tasks_cache_lookups_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if got["hit"] != 2 || got["miss"] != 1 || got["shared"] != 0 {
		t.Errorf("cache lookups = %v, want 2 hits, 1 miss, 0 shared", got)
	}
}
