#!/usr/bin/env node
// A plain socketcluster-server v20 for `make bench`: default options, every
// client may subscribe and publish. Usage: node server.js [port] [host]
'use strict';

const http = require('node:http');
const socketClusterServer = require('socketcluster-server');

const port = Number(process.argv[2] || 8100);
const host = process.argv[3] || '127.0.0.1';

const httpServer = http.createServer();
const agServer = socketClusterServer.attach(httpServer);

(async () => {
  for await (const { error } of agServer.listener('error')) {
    console.error('socketcluster-server error:', error && error.message);
  }
})();

httpServer.listen(port, host, () => {
  console.log(`socketcluster-server ${require('socketcluster-server/package.json').version} on ws://${host}:${port}/socketcluster/`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
