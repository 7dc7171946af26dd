package client_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

func TestClientDenyAndAllowPeer(t *testing.T) {
	repo, e := startAPI(t)
	c, err := client.FromRepo(repo, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const other = "12D3KooWKMU7oXdsZLYbPbvzwSKT1rWsB9SSZT9vhubpopCyMzNe"

	acc, err := c.DenyPeer(ctx, other)
	if err != nil || acc.Peer != other || acc.Access != apiv1.AccessDenied {
		t.Fatalf("DenyPeer = %+v, %v", acc, err)
	}
	if _, deny := e.Node.AccessLists(); len(deny) != 1 || deny[0].String() != other {
		t.Fatalf("the node's deny list is %v, want [%s]", deny, other)
	}
	peers, err := c.Peers(ctx)
	if err != nil || len(peers) != 1 || peers[0].ID != other || peers[0].Access != apiv1.AccessDenied {
		t.Fatalf("Peers = %+v, %v; want the denied peer", peers, err)
	}
	if acc, err = c.AllowPeer(ctx, other); err != nil || acc.Access != apiv1.AccessAllowed {
		t.Fatalf("AllowPeer = %+v, %v", acc, err)
	}
	if _, deny := e.Node.AccessLists(); len(deny) != 0 {
		t.Fatalf("the deny list is %v after AllowPeer, want it empty", deny)
	}

	_, err = c.DenyPeer(ctx, e.Node.ID().String())
	var ce *client.Error
	if !client.IsCode(err, apiv1.CodeInvalidRequest) || !errors.As(err, &ce) || ce.Status != http.StatusBadRequest {
		t.Fatalf("DenyPeer(self) = %v; want a 400 invalid_request", err)
	}
}
