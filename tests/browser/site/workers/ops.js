// A classic worker: its helpers come by a relative importScripts, as an app's would.
importScripts('lib.js');
