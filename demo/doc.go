// Package demo is the demo application of `sockmesh serve --demo` (and of the compatibility
// suites): procedures and access rules for trying sockmesh out. Anyone can log in as anyone:
// never for production.
package demo
