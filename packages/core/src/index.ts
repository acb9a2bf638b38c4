/**
 * @since 0.2.0
 */
export * as Containment from "./Containment.ts"
/**
 * @since 0.1.0
 */
export * as Doctor from "./Doctor.ts"
/**
 * @since 0.1.0
 */
export * as EnvPolicy from "./EnvPolicy.ts"
/**
 * @since 0.1.0
 */
export * as KillPolicy from "./KillPolicy.ts"
/**
 * @since 0.1.0
 */
export * as Ledger from "./Ledger.ts"
/**
 * @since 0.1.0
 */
export * as Lifeline from "./Lifeline.ts"
/**
 * @since 0.1.0
 */
export * as ManagedProcess from "./ManagedProcess.ts"
/**
 * @since 0.1.0
 */
export * as Membership from "./Membership.ts"
/**
 * @since 0.1.0
 */
export * as Metrics from "./Metrics.ts"
/**
 * @since 0.1.0
 */
export * as ProcessIdentity from "./ProcessIdentity.ts"
/**
 * @since 0.1.0
 */
export * as ProcessLauncher from "./ProcessLauncher.ts"
/**
 * @since 0.1.0
 */
export * as ProcessPool from "./ProcessPool.ts"
/**
 * @since 0.1.0
 */
export * as ProcessTable from "./ProcessTable.ts"
/**
 * @since 0.1.0
 */
export * as Reaper from "./Reaper.ts"
/**
 * @since 0.1.0
 */
export * as ShepherdConfig from "./ShepherdConfig.ts"
/**
 * @since 0.1.0
 */
export * as ShepherdError from "./ShepherdError.ts"
/**
 * @since 0.1.0
 */
export * as Signal from "./Signal.ts"
/**
 * @since 0.1.0
 */
export * as Teardown from "./Teardown.ts"
