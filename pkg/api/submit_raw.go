package api

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// rawMediaType is the Content-Type of a submission whose body is the raw
// input, its other fields in the query.
const rawMediaType = "application/octet-stream"

// parseRawSubmit reads a submission sent as Content-Type
// application/octet-stream: the body, at most apiv1.MaxInputBytes, is the
// raw input, and the query holds the other fields (apiv1.SubmitParams).
// size is the request's Content-Length, -1 if unknown: a body declared
// over the limit is refused before it is read. The task it returns is
// checked as parseSubmit checks one.
func parseRawSubmit(q url.Values, body io.Reader, size int64, d TaskDefaults, self peer.ID) (*skill.SkillTask, error) {
	req, err := submitQuery(q)
	if err != nil {
		return nil, err
	}
	if size > apiv1.MaxInputBytes {
		return nil, inputTooLarge(size)
	}
	in, err := io.ReadAll(io.LimitReader(body, apiv1.MaxInputBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, badRequest("read the input: %v", err)
	}
	if len(in) > apiv1.MaxInputBytes {
		n, _ := io.Copy(io.Discard, body) // to say how large it was, within the body limit
		return nil, inputTooLarge(int64(len(in)) + n)
	}
	req.InputBase64 = in
	return buildTask(req, d, self)
}

// submitQuery reads the query of a raw submission into a SubmitRequest
// without its input. Each parameter may be given once; unknown ones are
// refused.
func submitQuery(q url.Values) (*apiv1.SubmitRequest, error) {
	req := &apiv1.SubmitRequest{}
	for k, vs := range q {
		if !slices.Contains(apiv1.SubmitParams, k) {
			return nil, badRequest("unknown parameter %.40q: with a raw body the parameters are %s", k, strings.Join(apiv1.SubmitParams, ", "))
		}
		if len(vs) > 1 {
			return nil, badRequest("parameter %q is given %d times: give it once", k, len(vs))
		}
	}
	req.Skill, req.Version = q.Get(apiv1.ParamSkill), q.Get(apiv1.ParamVersion)
	if v := q.Get(apiv1.ParamPriority); v != "" {
		p, err := apiv1.ParsePriority(v)
		if err != nil {
			return nil, badRequest("parameter priority must be 0-255 or a level name (%s), not %.40q", strings.Join(apiv1.PriorityNames, ", "), v)
		}
		req.Priority = &p
	}
	var err error
	if req.Timeout, err = durationParam(q, apiv1.ParamTimeout); err != nil {
		return nil, err
	}
	if v := q.Get(apiv1.ParamMinTrust); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, badRequest("parameter min_trust must be a number between 0 and 1, not %.40q", v)
		}
		req.MinTrust = &f
	}
	if v := q.Get(apiv1.ParamMaxRetries); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, badRequest("parameter max_retries must be a whole number between 0 and %d, not %.40q", maxRetriesLimit, v)
		}
		req.MaxRetries = &n
	}
	if v := q.Get(apiv1.ParamNoCache); v != "" {
		if req.NoCache, err = strconv.ParseBool(v); err != nil {
			return nil, badRequest("parameter no_cache must be true or false, not %.40q", v)
		}
	}
	retry, err := retryQuery(q)
	if err != nil {
		return nil, err
	}
	req.Retry = retry
	return req, nil
}

// retryQuery reads the retry parameters, nil if none is set.
func retryQuery(q url.Values) (*apiv1.RetryPolicy, error) {
	if !q.Has(apiv1.ParamMaxAttempts) && !q.Has(apiv1.ParamBaseBackoff) && !q.Has(apiv1.ParamMaxBackoff) && !q.Has(apiv1.ParamRetryOn) {
		return nil, nil
	}
	p := &apiv1.RetryPolicy{}
	if v := q.Get(apiv1.ParamMaxAttempts); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, badRequest("parameter max_attempts must be a whole number between 0 and %d, not %.40q", apiv1.MaxAttempts, v)
		}
		p.MaxAttempts = n
	}
	var err error
	if p.BaseBackoff, err = durationParam(q, apiv1.ParamBaseBackoff); err != nil {
		return nil, err
	}
	if p.MaxBackoff, err = durationParam(q, apiv1.ParamMaxBackoff); err != nil {
		return nil, err
	}
	if q.Has(apiv1.ParamRetryOn) {
		p.RetryOn = []string{}
		for name := range strings.SplitSeq(q.Get(apiv1.ParamRetryOn), ",") {
			if name = strings.TrimSpace(name); name != "" {
				p.RetryOn = append(p.RetryOn, name)
			}
		}
	}
	return p, nil
}

// durationParam reads a duration parameter with a unit ("30s"); 0 if the
// parameter is not set.
func durationParam(q url.Values, name string) (apiv1.Duration, error) {
	v := q.Get(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, badRequest("parameter %s must be a duration with a unit, such as 30s or 5m, not %.40q", name, v)
	}
	return apiv1.Duration(d), nil
}
