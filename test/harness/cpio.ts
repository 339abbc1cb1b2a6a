// The cpio writer lives in src/util (the demo uses it too); tests import it from here.
export { type CpioFile, makeCpio } from '../../src/util/cpio.js';
