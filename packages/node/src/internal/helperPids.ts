/**
 * The pids of this host's live fork helpers (see NodeHelperLauncher). Their
 * children, like the host's own, show the host's environment until they exec:
 * the process table must not remember such a child's cookie as absent.
 *
 * @since 0.4.0
 */
export const helperPids = new Set<number>()
