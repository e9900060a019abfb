// Throws as it starts: the page's onerror sees where.
self.x = 1;
throw new Error('boom at start');
