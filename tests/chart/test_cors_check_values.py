"""``gatehouse.cors_check`` reads a namespace's values as the chart's ConfigMap renders them:
its table of values -> variables, checked against helm's rendering of every environment."""

from __future__ import annotations

from gatehouse.cors_check import CHART_VARIABLES, chart_variables
from gatehouse.settings import settings_from
from tests.chart.conftest import ENVIRONMENTS, Doc, find, load_values


def test_the_command_reads_each_environment_as_the_configmap_holds_it(
    rendered: dict[str, list[Doc]],
):
    for env in ENVIRONMENTS:
        [configmap] = [
            doc
            for doc in find(rendered[env], "ConfigMap")
            if "APP_ALLOWED_ORIGINS" in (doc.get("data") or {})
        ]
        data: dict[str, str] = configmap["data"]
        ours = chart_variables(load_values(env))
        # Every variable the table names is rendered, with a value that means the same.
        assert set(CHART_VARIABLES.values()) <= set(data), env
        for variable, value in ours.items():
            if variable == "APP_TRUSTED_HOSTS":  # the chart adds the Service's own names
                assert data[variable].startswith(f"{value},") or data[variable] == value, env
            else:
                assert value == data[variable], (env, variable)
        from_chart = settings_from({k: v for k, v in data.items() if k in ours})
        assert from_chart.model_dump(exclude={"trusted_hosts"}) == settings_from(ours).model_dump(
            exclude={"trusted_hosts"}
        ), env
