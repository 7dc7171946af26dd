// Package dashboard is cortexd's web dashboard, served by the API at /ui/:
// an overview (peers, throughput and latency charts, queue depth, success
// rate, this node's identity and addresses), the task list and each task's
// attempts, the peers and the skills, with a form to submit a task.
//
// The pages are rendered on the server with html/template from what the
// API answers (a Fetcher reads it in process), and the templates, the
// script and the stylesheet are embedded in the binary: there is no build
// step and nothing to fetch. Charts are SVG drawn here. A small plain
// script keeps a page live: it follows GET /v1/events with an EventSource
// and, on each event (at most once a second), fetches the page's live part
// again; it submits, cancels, denies and allows through the API's own
// endpoints, as a same-origin client with JSON bodies, so the API's browser
// guard and token rules apply to the dashboard as to any client.
package dashboard
