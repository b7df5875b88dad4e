/**
 * Worker module of quant/gptq_fast.ts: serves {@linkcode gptqTasks} (rows
 * of GPTQ's Hessian, or fasterquant's sweep over a range of rows).
 *
 * @module
 */
import { gptqTasks } from "./gptq_fast.ts";
import { serveTasks } from "../model/pool.ts";

serveTasks(gptqTasks);
