// www/webtune.d.ts is what embedders program against; www/webtune.js is what runs. `cargo xtask
// test` copies webtune.js beside itself as webtune.api-check.tmp.js (an import of webtune.js
// itself would resolve to the declarations) and type-checks this file: every member the
// declarations promise must exist in the implementation with a compatible type, so a method
// renamed or dropped on one side fails the tests.

import * as impl from "../../www/webtune.api-check.tmp.js";
import type * as api from "../../www/webtune";

// The instance side: every method, getter and property of FineTuner and WebtuneError.
export const fineTuner: api.FineTuner = null as unknown as impl.FineTuner;
export const webtuneError: api.WebtuneError = null as unknown as impl.WebtuneError;

// The static side (the declared constructor is private: create() and start() make one).
export const fineTunerStatics: Omit<typeof api.FineTuner, "prototype"> = impl.FineTuner;
export const webtuneErrorStatics: Omit<typeof api.WebtuneError, "prototype"> = impl.WebtuneError;

// The module's other exports.
export const presets: typeof api.PRESETS = impl.PRESETS;
export const servedModels: typeof api.servedModels = impl.servedModels;
export const taskOf: typeof api.taskOf = impl.taskOf;
export const mergeConfig: typeof api.mergeConfig = impl.mergeConfig;
export const defaultExport: typeof api.default = impl.default;
