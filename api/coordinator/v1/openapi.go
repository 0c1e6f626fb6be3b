package coordinatorv1

import _ "embed"

// OpenAPI is the OpenAPI (Swagger 2.0) document of the HTTP/JSON API,
// generated from coordinator.proto and coordinator_api.yaml by
// scripts/gen-api.sh; a node serves it at GET /openapi.json.
//
//go:embed coordinator.swagger.json
var OpenAPI []byte
