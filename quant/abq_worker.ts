/**
 * Worker side of ABQ-LLM's two-thread training step (quant/abq_parallel.ts):
 * serves {@linkcode abqLaneTasks} through model/pool.ts.
 *
 * @module
 */
import { serveTasks } from "../model/pool.ts";
import { abqLaneTasks } from "./abq_parallel.ts";

serveTasks(abqLaneTasks);
