// Package api holds the ember guest agent's RPC definitions: the protobuf
// messages and the ttrpc service (ember.agent.v1.Agent) generated from
// agent.proto.
//
// Regenerate with `go generate ./guest/api` (needs protoc, protoc-gen-go and
// protoc-gen-go-ttrpc on PATH; see docs/agent.md).
package api

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-ttrpc_out=. --go-ttrpc_opt=paths=source_relative agent.proto
