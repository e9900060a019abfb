// Started by a worker, by a URL relative to that worker's script.
self.postMessage({ pathname: self.location.pathname, api: typeof TCPSocket });
