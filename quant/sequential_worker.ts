/**
 * Worker side of GPTQ's calibration passes on workers (quant/sequential.ts
 * `passTasks`): one window of a pass per task.
 *
 * @module
 */
import { serveTasks } from "../model/pool.ts";
import { passTasks } from "./sequential.ts";

serveTasks(passTasks);
