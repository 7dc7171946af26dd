// Package api is cortexd's local HTTP API: JSON under /v1, server-sent
// events, Prometheus metrics and health checks, served over the engine it
// is given (the coordinator, the grid node, the skill registry and the
// trust graph, each through a small interface declared here).
//
// Endpoints:
//
//	POST   /v1/tasks                submit (apiv1.SubmitRequest) -> 202 apiv1.Task
//	GET    /v1/tasks?state=&limit=&after=   list, newest first -> apiv1.TaskList
//	GET    /v1/tasks/{id}           status and result -> apiv1.Task
//	GET    /v1/tasks/{id}/wait?timeout=30s  wait (at most 10m) -> apiv1.Task
//	POST   /v1/tasks/{id}/cancel    cancel (also DELETE /v1/tasks/{id})
//	GET    /v1/id | /v1/peers | /v1/skills | /v1/metrics | /v1/trust[/{peer}]
//	POST   /v1/skills?name=&version=&...  add a wasm skill (body: the module, application/wasm) -> 201 apiv1.Skill
//	DELETE /v1/skills/{name}[?version=]   remove a wasm skill -> apiv1.RemovedSkills
//	POST   /v1/peers/{peer}/deny    cut a peer off until restart -> apiv1.PeerAccess
//	POST   /v1/peers/{peer}/allow   undo a deny (or extend the allow list) -> apiv1.PeerAccess
//	GET    /v1/events[?task=ID][&types=task,progress,peer,spot_check,workflow]  server-sent events (apiv1.Event)
//	GET    /v1/tasks/{id}/trace     attempts, router candidates, input -> apiv1.TaskTrace
//	GET    /v1/metrics/series       tasks/s and latency per 5 s -> apiv1.Series
//	GET    /ui/...                  the web dashboard (package dashboard)
//	POST   /ui/login                the token, for a dashboard session cookie
//	POST   /ui/logout               ends the dashboard session, clears its cookie
//	GET    /metrics                 Prometheus text format
//	GET    /healthz | /readyz       liveness; readiness (503 while draining)
//
// Every 4xx and 5xx answer is an apiv1.ErrorBody with a code from the
// apiv1.Code* constants. Request bodies are limited (WithMaxBodyBytes; a
// module to POST /v1/skills by Deps.Installer's MaxModule instead).
// A bearer token, when set, is always accepted, and is required for every
// endpoint but /healthz and /readyz when the listener is beyond loopback.
// Web pages cannot drive the API: a request whose Origin is not the API's
// own is refused (403), a body must come with Content-Type:
// application/json (415; raw inputs and modules have their own types, which
// need a CORS preflight too), and a request without a token must name a
// loopback Host with the listener's port (403; DNS rebinding). Beyond
// loopback the dashboard's session cookie (from POST /ui/login) stands for
// the token.
package api
