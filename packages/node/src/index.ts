/**
 * @since 0.1.0
 */
export * as DoctorHttp from "./DoctorHttp.ts"
/**
 * @since 0.1.0
 */
export * as NodeLedger from "./NodeLedger.ts"
/**
 * @since 0.1.0
 */
export * as NodeLifeline from "./NodeLifeline.ts"
/**
 * @since 0.1.0
 */
export * as NodeProcessLauncher from "./NodeProcessLauncher.ts"
/**
 * @since 0.4.0
 */
export * as NodeHelperLauncher from "./NodeHelperLauncher.ts"
/**
 * @since 0.1.0
 */
export * as NodeProcessTable from "./NodeProcessTable.ts"
/**
 * @since 0.1.0
 */
export * as NodeShepherd from "./NodeShepherd.ts"
