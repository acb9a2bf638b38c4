/**
 * @since 0.1.0
 */
export * as NodeProcessLauncher from "./NodeProcessLauncher.ts"
/**
 * @since 0.1.0
 */
export * as NodeProcessTable from "./NodeProcessTable.ts"
/**
 * @since 0.1.0
 */
export * as NodeShepherd from "./NodeShepherd.ts"
