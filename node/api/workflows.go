package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
)

// WorkflowBackend is a Backend that runs workflows (the node).
type WorkflowBackend interface {
	Workflows(ctx context.Context) (apijson.Workflows, error)
	RetryWorkflows(ctx context.Context, rule, key string) (int, error)
}

// DuplicatePolicy is a Backend that may allow likely duplicates by default
// (config allow_duplicates). A Backend without it refuses them.
type DuplicatePolicy interface {
	AllowDuplicates() bool
}

func (s *Server) allowDuplicates() bool {
	p, ok := s.b.(DuplicatePolicy)
	return ok && p.AllowDuplicates()
}

func (s *Server) workflows(w http.ResponseWriter, r *http.Request) {
	wb, ok := s.b.(WorkflowBackend)
	if !ok {
		writeError(w, errors.New("this node does not run workflows"))
		return
	}
	out, err := wb.Workflows(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) retryWorkflows(w http.ResponseWriter, r *http.Request) {
	wb, ok := s.b.(WorkflowBackend)
	if !ok {
		writeError(w, errors.New("this node does not run workflows"))
		return
	}
	var req apijson.WorkflowRetryRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	n, err := wb.RetryWorkflows(r.Context(), req.Rule, req.Key)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"retried": n})
}

func (s *Server) duplicates(w http.ResponseWriter, r *http.Request) {
	var colls []string
	if c := r.URL.Query().Get("collection"); c != "" {
		colls = []string{c}
	}
	ctx := r.Context()
	store := s.b.Store()
	nodes := s.b.Names(ctx)
	var groups []crdt.DuplicateGroup
	if err := store.Duplicates(ctx, colls, func(g crdt.DuplicateGroup) error { groups = append(groups, g); return nil }); err != nil {
		writeError(w, err)
		return
	}
	out := []apijson.Duplicate{}
	for _, g := range groups {
		d := apijson.Duplicate{Collection: g.Collection, Rule: g.Rule.Name(), Normalize: g.Rule.Normalize, Since: g.Since.Wall().UTC(), Records: []apijson.Record{}}
		for _, id := range g.IDs {
			rec, err := store.Get(ctx, g.Collection, id)
			if errors.Is(err, crdt.ErrNotFound) {
				continue // deleted since the index was read
			}
			if err != nil {
				writeError(w, err)
				return
			}
			d.Records = append(d.Records, apijson.FromRecord(rec, nodes))
		}
		if len(d.Records) > 1 {
			out = append(out, d)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) merge(w http.ResponseWriter, r *http.Request) {
	var req apijson.MergeRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Keep == "" || req.Other == "" {
		writeError(w, BadRequest(errors.New("merge: give keep and other")))
		return
	}
	res, err := s.b.Store().MergeRecords(r.Context(), r.PathValue("collection"), req.Keep, req.Other, req.PreferKeep)
	if err != nil {
		writeError(w, err)
		return
	}
	out := apijson.MergeResponse{Fields: res.Fields, Refs: res.Refs}
	if out.Fields == nil {
		out.Fields = []string{}
	}
	if out.Refs == nil {
		out.Refs = []string{}
	}
	if res.Deleted != (crdt.OpID{}) {
		out.Deleted = res.Deleted.String()
	}
	writeJSON(w, http.StatusOK, out)
}

// Workflows reports the node's workflows.
func (c *Client) Workflows(ctx context.Context) (out apijson.Workflows, err error) {
	err = c.Do(ctx, "GET", "/v1/workflows", nil, &out)
	return out, err
}

// RetryWorkflows moves failed runs back to pending: all (rule and key
// empty), a rule's, or one.
func (c *Client) RetryWorkflows(ctx context.Context, rule, key string) (int, error) {
	body, err := json.Marshal(apijson.WorkflowRetryRequest{Rule: rule, Key: key})
	if err != nil {
		return 0, err
	}
	var out struct {
		Retried int `json:"retried"`
	}
	err = c.Do(ctx, "POST", "/v1/workflows/retry", bytes.NewReader(body), &out)
	return out.Retried, err
}

// Duplicates lists the groups of likely duplicates (of one collection when
// not empty).
func (c *Client) Duplicates(ctx context.Context, collection string) (out []apijson.Duplicate, err error) {
	path := "/v1/duplicates"
	if collection != "" {
		path += "?collection=" + url.QueryEscape(collection)
	}
	err = c.Do(ctx, "GET", path, nil, &out)
	return out, err
}

// Merge merges record other into keep.
func (c *Client) Merge(ctx context.Context, collection string, req apijson.MergeRequest) (out apijson.MergeResponse, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return out, fmt.Errorf("merge: %w", err)
	}
	err = c.Do(ctx, "POST", "/v1/merge/"+url.PathEscape(collection), bytes.NewReader(body), &out)
	return out, err
}

// PutWith is Put with every option of a PutRequest (AllowDuplicate).
func (c *Client) PutWith(ctx context.Context, collection, id string, req apijson.PutRequest) (res apijson.PutResponse, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return res, fmt.Errorf("put %s/%s: %w", collection, id, err)
	}
	err = c.Do(ctx, "PUT", recordPath(collection, id), bytes.NewReader(body), &res)
	return res, err
}
