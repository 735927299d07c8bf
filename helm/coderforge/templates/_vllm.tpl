{{/*
The vLLM server's settings: the values under `vllm`, overridden by the `vllm` section and
`synth.teacher` of the recipe named by `vllm.recipe` (so the recipe stays the one source of truth);
`vllm.long_context` of the recipe overrides `vllm.longContext` key by key.
Returns YAML: replicas, tensorParallelSize, maxModelLen, dtype, gpuMemoryUtilization, modelUri, longContext.
*/}}
{{- define "coderforge.vllm.settings" -}}
{{- $v := .Values.vllm -}}
{{- $lc := deepCopy (default (dict) $v.longContext) -}}
{{- $s := dict "replicas" $v.replicas "tensorParallelSize" $v.tensorParallelSize "maxModelLen" $v.maxModelLen "dtype" $v.dtype "gpuMemoryUtilization" $v.gpuMemoryUtilization "modelUri" $v.model.uri "longContext" $lc -}}
{{- with $v.recipe -}}
{{- $text := "" -}}
{{- if hasKey $.Values.recipes . -}}
{{- $text = index $.Values.recipes . -}}
{{- else -}}
{{- $text = $.Files.Get (printf "recipes/%s.yaml" .) -}}
{{- end -}}
{{- if not $text -}}
{{- fail (printf "vllm.recipe: no recipe %q (neither recipes/%s.yaml in the chart nor recipes.%s in values)" . . .) -}}
{{- end -}}
{{- $recipe := fromYaml $text -}}
{{- if hasKey $recipe "Error" -}}
{{- fail (printf "vllm.recipe: recipe %q is not YAML: %s" . (get $recipe "Error")) -}}
{{- end -}}
{{- $section := default (dict) $recipe.vllm -}}
{{- range $key, $value := dict "replicas" "replicas" "tensor_parallel_size" "tensorParallelSize" "max_model_len" "maxModelLen" "dtype" "dtype" "gpu_memory_utilization" "gpuMemoryUtilization" -}}
{{- if hasKey $section $key -}}
{{- $_ := set $s $value (index $section $key) -}}
{{- end -}}
{{- end -}}
{{- $recipeLc := default (dict) $section.long_context -}}
{{- range $key, $value := dict "enabled" "enabled" "yarn_factor" "yarnFactor" "original_max_position_embeddings" "originalMaxPositionEmbeddings" "beta_fast" "betaFast" "beta_slow" "betaSlow" -}}
{{- if hasKey $recipeLc $key -}}
{{- $_ := set $lc $value (index $recipeLc $key) -}}
{{- end -}}
{{- end -}}
{{- with $recipe.synth -}}
{{- with .teacher -}}
{{- $_ := set $s "modelUri" . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $s -}}
{{- end -}}

{{- define "coderforge.vllm.name" -}}
{{- printf "%s-vllm" (include "coderforge.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The URL a recipe's `vllm.base_url` names (like coderforge.mlflowUrl for MLflow). */}}
{{- define "coderforge.vllmUrl" -}}
{{- printf "http://%s.%s.svc:8000" (include "coderforge.vllm.name" .) .Release.Namespace -}}
{{- end -}}
