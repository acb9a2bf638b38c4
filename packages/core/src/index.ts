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
export * as ManagedProcess from "./ManagedProcess.ts"
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
