// Package netpoll is the front's transport below WebSocket: a second epoll set that lets an
// idle connection wait without a goroutine (Poller), reads and writes of a connection's
// descriptor as raw non-blocking system calls, with a try-only write that never waits for
// room (Conn), and a connection that hands out bytes read ahead while looking for more
// (PrefetchConn). Linux only; elsewhere every method answers "not this way" and the front
// uses its net.Conn and a goroutine per connection.
package netpoll
