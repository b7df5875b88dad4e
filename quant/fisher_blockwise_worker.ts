/**
 * Worker side of quant/fisher_blockwise.ts: serves {@linkcode blockTasks}
 * (a group of windows through one block, forward, or backward with its
 * partial Σ g²) through model/pool.ts.
 *
 * @module
 */
import { serveTasks } from "../model/pool.ts";
import { blockTasks } from "./fisher_blockwise.ts";

serveTasks(blockTasks);
