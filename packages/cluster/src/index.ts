/**
 * @since 0.1.0
 */

/**
 * The typed errors of `@shepherd/cluster`.
 *
 * @since 0.1.0
 */
export * as ClusterError from "./ClusterError.ts"

/**
 * The timing rules that keep a session on one runner at a time.
 *
 * @since 0.1.0
 */
export * as ClusterConfig from "./ClusterConfig.ts"

/**
 * Runner and client layers.
 *
 * @since 0.1.0
 */
export * as ClusterRunner from "./ClusterRunner.ts"

/**
 * The client side of `SessionEntity`.
 *
 * @since 0.1.0
 */
export * as SessionClient from "./SessionClient.ts"

/**
 * A Shepherd session as an effect/cluster entity.
 *
 * @since 0.1.0
 */
export * as SessionEntity from "./SessionEntity.ts"

/**
 * The session records in the database.
 *
 * @since 0.1.0
 */
export * as TreeStore from "./TreeStore.ts"
