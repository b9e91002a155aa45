import { DeviceRefs } from '../../policy/device-refs.js';

/** Device ids under a fixed test key (the service derives its key from its digest key). */
export const testDeviceRefs = (fill = 7): DeviceRefs => new DeviceRefs(Buffer.alloc(32, fill));
