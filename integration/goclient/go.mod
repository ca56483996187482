module github.com/sockmesh/sockmesh/integration/goclient

go 1.26

// sacOO7/socketcluster-client-go and the exact versions of its dependencies that the Go
// module proxy serves (it does not list them): a test-only module, so none of this reaches
// sockmesh's own dependencies.
require (
	github.com/gorilla/websocket v1.4.1 // indirect
	github.com/rgamba/evtwebsocket v0.0.0-20160725170122-f226ee483c6c // indirect
	github.com/sacOO7/go-logger v0.0.0-20180719173527-9ac9add5a50d // indirect
	github.com/sacOO7/gowebsocket v0.0.0-20180719182212-1436bb906a4e // indirect
	github.com/sacOO7/socketcluster-client-go v1.0.0
	golang.org/x/net v0.0.0-20200226121028-0de0cce0169b // indirect
)
