/**
 * Worker side of {@linkcode fisherInformation}: serves
 * {@linkcode fisherTasks} (a chunk of windows → its partial Σ g², float64,
 * transferred) through model/pool.ts.
 *
 * @module
 */
import { serveTasks } from "../model/pool.ts";
import { fisherTasks } from "./fisher.ts";

serveTasks(fisherTasks);
