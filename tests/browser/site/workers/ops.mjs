// A module worker: its helpers come by a relative import.
import './lib.js';
import { answer } from './helper.mjs';

self.moduleAnswer = answer;
